"""Options that several sub-commands share, spelled and checked the same way everywhere.

Every command that reads a data set takes ``-d/--dataset`` (a positional form stays as an
alias where it was one), writes to ``-o/--output``, runs on ``--device auto|cpu|cuda[:N]``,
replaces only its own earlier outputs with ``--overwrite`` and hides its progress bars
with ``--quiet``. ``tests/test_cli_options.py`` walks every parser and holds them to it.
"""

from __future__ import annotations

import argparse
import sys

from lesionseg.errors import LesionsegError

DATASET_HELP = "data set folder (dataset.json) or CSV/TSV manifest"


def add_dataset(
    parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup,
    *,
    required: bool = True,
    positional: bool = False,
    help: str = DATASET_HELP,
) -> None:
    """``-d/--dataset``; with ``positional``, a bare first argument means the same.

    Call :func:`dataset_of` in the command to read it. Argparse cannot require "one of
    the two spellings", so that check is :func:`dataset_of`'s.
    """
    parser.add_argument("-d", "--dataset", metavar="DATASET", help=help)
    if positional:
        parser.add_argument("dataset_positional", nargs="?", metavar="DATASET", help=help)
    if hasattr(parser, "set_defaults"):  # a mutually exclusive group has none
        parser.set_defaults(_dataset_required=required)


def dataset_of(args: argparse.Namespace) -> str | None:
    """The data set given with ``-d/--dataset`` or positionally (not both).

    Raises:
        LesionsegError: Neither (when required) or two different ones.
    """
    named = getattr(args, "dataset", None)
    bare = getattr(args, "dataset_positional", None)
    if named and bare and named != bare:
        raise LesionsegError(f"two data sets given ({bare} and -d {named}); give one")
    found = named or bare
    if not found and getattr(args, "_dataset_required", False):
        raise LesionsegError("no data set given: use -d/--dataset DATASET")
    return found


def add_models(parser: argparse.ArgumentParser) -> None:
    """``-m/--model MODEL_DIR``, repeatable: one trained method, or an ensemble of several."""
    parser.add_argument(
        "-m",
        "--model",
        action="append",
        required=True,
        metavar="MODEL_DIR",
        help="trained model folder; repeat for an ensemble",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: ``auto`` (default: CUDA when there is one), ``cpu``, ``cuda``, ``cuda:N``."""
    parser.add_argument(
        "--device", default="auto", help="auto (default: cuda if available), cpu, cuda, cuda:N"
    )


def check_device(name: str) -> str:
    """Validate ``--device`` and resolve ``auto``.

    Returns:
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        LesionsegError: Unknown device, or CUDA asked for where there is none.
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise LesionsegError(f"--device {name}: CUDA is not available on this machine")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise LesionsegError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
        return name
    raise LesionsegError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars or step messages; errors and the final summary stay."""
    parser.add_argument(
        "--quiet", action="store_true", help="no progress output (errors and the summary stay)"
    )


def add_overwrite(parser: argparse.ArgumentParser, what: str = "outputs") -> None:
    """``--overwrite``: replace what lesionseg wrote before (nothing else)."""
    parser.add_argument(
        "--overwrite", action="store_true", help=f"replace existing {what} lesionseg wrote"
    )


def add_speed(parser: argparse.ArgumentParser) -> None:
    """``--precision fp32|bf16|auto``, ``--amp`` and ``--layout auto|channels_last|contiguous``."""
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="fp32 (default); bf16: bfloat16 on the CPU, float16 on CUDA; auto: reduced "
        "precision only where the hardware computes it (CUDA, CPUs with AVX-512 BF16/AMX) "
        "and, on the CPU, the model records that it agrees (lesionseg check-precision)",
    )
    parser.add_argument("--amp", action="store_true", help="the same as --precision bf16")
    parser.add_argument(
        "--layout",
        choices=("auto", "channels_last", "contiguous"),
        default="auto",
        help="memory layout of the networks: auto (default: the faster of the two, timed on "
        "the first batch of each network on the CPU; the two agree to float rounding, so "
        "name one for bit-identical reruns), channels_last or contiguous",
    )


def reduced_precision(args: argparse.Namespace, models: list, device: str) -> bool:
    """Whether ``--precision``/``--amp`` ask for mixed precision for these models here.

    ``auto`` takes it only where the hardware computes it and every model records that
    bfloat16 gives it the labels float32 gives (and says so when it falls back).
    """
    from lesionseg.inference.precision import use_reduced_precision
    from lesionseg.inference.precision_check import bf16_verified

    verified = all(bf16_verified(m.folder) for m in models)
    amp = args.amp or use_reduced_precision(args.precision, device, verified)
    if args.precision == "auto" and not amp and not verified and not args.quiet:
        print(
            "--precision auto: float32, as no model records that bfloat16 gives it the same "
            "labels (lesionseg check-precision MODEL_DIR -d DATASET records it)",
            file=sys.stderr,
        )
    return amp
