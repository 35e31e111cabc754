"""Built-in training schedulers, one per module; importing this package registers them all."""

from rmtsched.sched.train_schedulers import checkpointed, diagonal, greedy, sequential

__all__ = ["checkpointed", "diagonal", "greedy", "sequential"]
