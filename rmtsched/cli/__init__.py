"""The ``rmtsched`` command line: a thin shell over the library.

Each subcommand lives in its own ``cmd_<name>.py`` module exposing ``register(subparsers)``; ``main``
discovers them, so adding a command never edits a shared file.
"""
