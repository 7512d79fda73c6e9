"""Entry point of the ``lesionseg`` program: builds the parser and runs a sub-command.

User errors (:class:`~lesionseg.errors.LesionsegError`) are printed as one line
with exit status 2, and so are the operating system's refusals (a full or read-only
disk, a missing permission: :class:`OSError` with a file name) and a request for more
memory than the machine has; other exceptions are bugs and print a traceback only with
``--debug`` (otherwise one line and exit status 1). A closed output pipe
(``lesionseg info ... | head``) ends the program quietly with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import os
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


#: ``build_parser(ALL)``: every sub-command with all its options.
ALL = "*"


def build_parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The argument parser with every discovered sub-command.

    Args:
        command: Whose options to add: :data:`ALL` (every sub-command's), one sub-command's
            name (the others are listed with their help only), or None (none). Adding a
            command's options may load what it needs (the evaluation presets, say); so
            that ``lesionseg --help`` starts fast, :func:`main` adds only the chosen one's.
    """
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
        if command in (ALL, module.NAME):
            module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first argument that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _os_error_line(err: OSError) -> str | None:
    """One line for an operating-system error that names a file; None for other errors."""
    if not getattr(err, "filename", None):
        return None
    from lesionseg.data.atomic import disk_error

    return str(disk_error(err, err.filename)).replace("cannot write", "cannot access", 1)


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``| head``): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lesionseg`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    prefix = f"lesionseg {args.command}"
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except LesionsegError as err:
        if args.debug:
            raise
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError as err:
        if args.debug:
            raise
        detail = f" ({err})" if str(err) else ""
        print(
            f"{prefix}: error: not enough memory for this input{detail}; use a smaller --tile "
            "or --batch-size, or a machine with more memory",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except OSError as err:
        line = _os_error_line(err)
        if args.debug or line is None:
            if args.debug:
                raise
            return _internal_error(prefix, err)
        print(f"{prefix}: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:  # a bug: keep the user's terminal readable unless asked
        if args.debug:
            raise
        return _internal_error(prefix, err)


def _internal_error(prefix: str, err: BaseException) -> int:
    print(
        f"{prefix}: internal error: {type(err).__name__}: {err} "
        "(rerun with --debug for the traceback)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
