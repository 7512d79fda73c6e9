"""``lesionseg check-precision``: does bfloat16 give a model the labels float32 gives?"""

from __future__ import annotations

import argparse

from lesionseg.cli.options import add_dataset, add_device, add_quiet, check_device, dataset_of

NAME = "check-precision"
ORDER = 42
HELP = "measure whether bfloat16 prediction agrees with float32 and record it for --precision auto"
DESCRIPTION = """Predict a few cases of a data set in float32 and with bfloat16 autocast,
compare the labels (share of brain voxels that agree, change of the Dice with the reference
label) and record the result in the model folder (precision.json). predict --precision
auto uses bfloat16 on the CPU only for models whose record passed: at least 99.9 % of
brain voxels agree and the Dice changes by less than 0.002 on every case checked.

examples:
  lesionseg check-precision models/dm -d data/ms
  lesionseg check-precision models/dm -d data/ms --cases 4 --all"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg check-precision``."""
    parser.add_argument("model", metavar="MODEL_DIR", help="trained model folder")
    add_dataset(parser)
    parser.add_argument(
        "--cases", type=int, default=2, metavar="N", help="cases to compare (default 2)"
    )
    parser.add_argument(
        "--all", action="store_true", help="draw the cases from every case, not the test split"
    )
    add_device(parser)
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    """Compare, record and print the figures."""
    from lesionseg.data.dataset import load_dataset
    from lesionseg.errors import LesionsegError
    from lesionseg.inference.method import load_method
    from lesionseg.inference.precision_check import compare_precisions, write_check

    if args.cases < 1:
        raise LesionsegError("--cases must be at least 1")
    device = check_device(args.device)
    method = load_method(args.model, device=device)
    dataset = load_dataset(dataset_of(args))
    subjects = list(dataset.subjects) if args.all else dataset.split("test")
    if not subjects:
        raise LesionsegError("the data set has no test cases; use --all", dataset_of(args))
    check = compare_precisions(method, subjects[: args.cases], device=device)
    path = write_check(args.model, check)
    verdict = "passed" if check.passed else "failed: --precision auto keeps float32"
    print(
        f"bfloat16 vs float32 on {len(check.cases)} case(s): labels agree on "
        f"{100 * check.agreement:.3f} % of brain voxels (lowest), Dice change "
        f"{check.dice_change:.4f} (largest); {verdict} -> {path}"
    )
    if not check.hardware_bf16 and not args.quiet:
        print("note: this CPU emulates bfloat16; auto keeps float32 here anyway")
    return 0
