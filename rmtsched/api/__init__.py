"""The Python API: load a model, run it under any schedule, time it, verify it, generate with it.

``rmtsched.load(...)`` gives a ``Model`` (``forward`` -> logits and hidden states, ``generate``);
``rmtsched.run(...)`` and ``rmtsched.verify(...)`` return exactly the records ``rmtsched run`` and
``rmtsched verify`` print (the CLI is a thin shell over them). Every entry point takes a ``RunConfig``
(or its fields as keywords): which model and weights, which input, device, dtype, seed.
"""

from rmtsched.api.generation import generate
from rmtsched.api.model import ForwardOutput, Model, input_of, load, load_config, outputs_of, seeded_spec
from rmtsched.api.running import pipeline_record, run
from rmtsched.api.verification import verify
from rmtsched.specs.run import RunConfig

__all__ = ["ForwardOutput", "Model", "RunConfig", "generate", "input_of", "load", "load_config", "outputs_of",
           "pipeline_record", "run", "seeded_spec", "verify"]
