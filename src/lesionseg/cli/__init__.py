"""The ``lesionseg`` command line: a thin layer over the Python API.

Each sub-command is one module in :mod:`lesionseg.cli.commands` that defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; modules
are discovered, so adding a command means adding a file.
"""
