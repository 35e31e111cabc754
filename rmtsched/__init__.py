"""rmtsched: schedule, simulate and run layer-recurrent memory transformers.

The package has three layers with imports pointing one way: ``rmtsched.sched`` (cell DAGs, the schedule
IR, schedulers, the validator) knows nothing of ``rmtsched.sim`` (cost simulator) or
``rmtsched.backends`` (PyTorch execution); both of those consume ``sched``'s types.
"""

__version__ = "0.1.0"
