"""Closing the loop between the simulator and the PyTorch backend.

``calibrate`` times the backend's own kernels and steps and fits the simulator's ``HardwareSpec`` to them
(``rmtsched calibrate``); ``compare`` runs every schedule on the backend and in the simulator and reports
predicted against measured time (``rmtsched compare``), ``compare_train`` the same for one training step,
with its peak activation memory (``rmtsched compare --train``). This is the one layer that imports both ``sim``
and ``backends``.
"""

from rmtsched.calibrate.calibration import Calibration, calibrate, start_spec
from rmtsched.calibrate.compare import Comparison, ScheduleComparison, compare
from rmtsched.calibrate.compare_train import TrainComparison, TrainScheduleComparison, compare_train
from rmtsched.calibrate.device import Target, resolve_target
from rmtsched.calibrate.fit import FitResult, fit_hardware
from rmtsched.calibrate.measurement import Measurement
from rmtsched.calibrate.plan import DEFAULT_PLAN, PerKernelStage, Stage, fit_plan

__all__ = [
    "DEFAULT_PLAN",
    "Calibration",
    "Comparison",
    "FitResult",
    "Measurement",
    "PerKernelStage",
    "ScheduleComparison",
    "Stage",
    "Target",
    "TrainComparison",
    "TrainScheduleComparison",
    "calibrate",
    "compare",
    "compare_train",
    "fit_hardware",
    "fit_plan",
    "resolve_target",
    "start_spec",
]
