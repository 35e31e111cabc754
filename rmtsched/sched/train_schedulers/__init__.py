"""Built-in training schedulers, one per module; importing this package registers them all."""

from rmtsched.sched.train_schedulers import checkpointed, diagonal, greedy, pipelined, sequential

__all__ = ["checkpointed", "diagonal", "greedy", "pipelined", "sequential"]
