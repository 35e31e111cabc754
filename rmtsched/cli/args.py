"""Arguments shared by the subcommands: number types that name a bad value, and the ``RunConfig`` option group.

They are defined in ``rmtsched.specs.run_options`` (below ``backends``, so the torchrun worker's parser
uses the same group without an import running back up the layers); subcommands import them from here.
"""

from rmtsched.specs.run_options import (
    add_run_arguments,
    non_negative_float,
    non_negative_int,
    positive_int,
    positive_seconds,
    run_config,
)

__all__ = ["add_run_arguments", "non_negative_float", "non_negative_int", "positive_int", "positive_seconds",
           "run_config"]
