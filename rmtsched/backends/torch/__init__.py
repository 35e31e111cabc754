"""The PyTorch backend: ARMT/RMT models on stacked LLaMA layers and an executor that runs any valid
schedule of them, bit-exactly on CPU. See ``params.py`` for the parameter names and ``armt.py`` for
the memory maths we follow."""

from rmtsched.backends.torch.armt import ARMTModel
from rmtsched.backends.torch.executor import ExecutionResult, ExecutionStats, StepRunner, contiguous_runs, execute
from rmtsched.backends.torch.models import DTYPES, build_model, parse_dtype, register_model_family
from rmtsched.backends.torch.params import init_params, param_shapes
from rmtsched.backends.torch.rmt import RMTModel
from rmtsched.backends.torch.rowmm import RowMatmul
from rmtsched.backends.torch.train_executor import TrainResult, TrainStats, train_gradients, train_step

__all__ = [
    "DTYPES",
    "ARMTModel",
    "ExecutionResult",
    "ExecutionStats",
    "RMTModel",
    "RowMatmul",
    "StepRunner",
    "TrainResult",
    "TrainStats",
    "build_model",
    "contiguous_runs",
    "execute",
    "init_params",
    "param_shapes",
    "parse_dtype",
    "register_model_family",
    "train_gradients",
    "train_step",
]
