"""Arguments shared by the subcommands: positive/non-negative integer types and the ``RunConfig`` option group.

They are defined in ``rmtsched.specs.run_options`` (below ``backends``, so the torchrun worker's parser
uses the same group without an import running back up the layers); subcommands import them from here.
"""

from rmtsched.specs.run_options import add_run_arguments, non_negative_int, positive_int, run_config

__all__ = ["add_run_arguments", "non_negative_int", "positive_int", "run_config"]
