"""Built-in schedulers, one per module; importing this package registers them all."""

from rmtsched.sched.schedulers import diagonal, greedy, pipelined, sequential

__all__ = ["diagonal", "greedy", "pipelined", "sequential"]
