"""The cost simulator: predict time, utilisation and memory of any schedule on any hardware.

``CostModel`` turns a ``Workload`` (kernels per cell) and a ``HardwareSpec`` into step costs; ``simulate``
runs a schedule through the discrete-event engine, ``analytic_simulate`` gives the same numbers in closed
form for the named schedules. ``sim.trace`` and ``sim.report`` turn results into traces, charts and tables.
"""

from rmtsched.sim.analytic import analytic_simulate, available_closed_forms, register_closed_form
from rmtsched.sim.cost import CostModel, StepProfile
from rmtsched.sim.engine import simulate
from rmtsched.sim.result import Event, SimResult, Timeline, TransferRecord
from rmtsched.sim.workload import Workload, full_attention_workload, workload_from_model, workload_from_spec
from rmtsched.specs.armt_cost import armt_cell_kernels, decoder_layer_kernels, full_attention_layer_kernels

__all__ = [
    "CostModel",
    "Event",
    "SimResult",
    "StepProfile",
    "Timeline",
    "TransferRecord",
    "Workload",
    "analytic_simulate",
    "armt_cell_kernels",
    "available_closed_forms",
    "decoder_layer_kernels",
    "full_attention_layer_kernels",
    "full_attention_workload",
    "register_closed_form",
    "simulate",
    "workload_from_model",
    "workload_from_spec",
]
