"""Entry point of the ``lesionseg`` program: builds the parser and runs a sub-command.

User errors (:class:`~lesionseg.errors.LesionsegError`) are printed as one line
with exit status 2; other exceptions are bugs and print a traceback only with
``--debug`` (otherwise one line and exit status 1).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from lesionseg import __version__
from lesionseg.errors import LesionsegError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _command_modules() -> list[ModuleType]:
    """Import every module in ``lesionseg.cli.commands`` that defines a command."""
    from lesionseg.cli import commands

    modules = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 50), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every discovered sub-command."""
    parser = argparse.ArgumentParser(
        prog="lesionseg",
        description="Brain-lesion segmentation in multi-modal 3D MRI with published CNN methods.",
    )
    parser.add_argument("--version", action="version", version=f"lesionseg {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for errors (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        command_parser = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command_parser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lesionseg`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args._run(args) or 0)
    except LesionsegError as err:
        if args.debug:
            raise
        print(f"lesionseg {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"lesionseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug: keep the user's terminal readable unless asked
        if args.debug:
            raise
        print(
            f"lesionseg {args.command}: internal error: {type(err).__name__}: {err} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
