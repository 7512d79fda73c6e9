"""``lesionseg train``: train a recipe on a data set (also under torchrun), or resume a run."""

from __future__ import annotations

import argparse

import yaml

from lesionseg.errors import LesionsegError

NAME = "train"
ORDER = 30
HELP = "train a recipe on a data set, or continue a killed run with --resume"
DESCRIPTION = """Train a recipe (a YAML file, or a packaged recipe such as deepmedic-tiny) on a
data set (folder with dataset.json, or CSV/TSV manifest) into a model folder: model.safetensors
+ config.json (best validation Dice), last/, log.csv, progress.png, tensorboard/, splits.json
and checkpoint.pt. The data set is preprocessed into a cache next to the model folder
(lesionseg-cache/), shared by runs with the same data and preprocessing; unchanged subjects
are not preprocessed again.

examples:
  lesionseg train deepmedic-tiny -d data/ms -o models/ms-tiny
  lesionseg train configs/deepmedic-paper.yaml -d data/ms -o models/ms-f0 --fold 0 --folds 5
  lesionseg train --resume models/ms-f0
  torchrun --nproc_per_node=2 -m lesionseg train deepmedic-tiny -d data/ms -o models/ddp"""


def _override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read value {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg train``."""
    parser.add_argument("recipe", nargs="?", help="recipe YAML file or packaged recipe name")
    parser.add_argument("-d", "--dataset", help="data set folder (dataset.json) or CSV manifest")
    parser.add_argument("-o", "--output", help="model folder to create")
    parser.add_argument("--fold", type=int, help="validation fold (0-based) of a k-fold split")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, help="run seed (default: the recipe's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--epochs", type=int, help="epochs of every stage (overrides the recipe)")
    parser.add_argument(
        "--set",
        dest="overrides",
        type=_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set train.batches_per_epoch=20",
    )
    parser.add_argument("--cache", help="preprocessed cache folder (default: next to -o)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in this model folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing -o folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and print where the model is."""
    from lesionseg.training import resume, train

    if args.resume:
        if args.recipe or args.dataset or args.output:
            raise LesionsegError("--resume DIR takes no recipe, -d or -o: the folder has them")
        result = resume(
            args.resume,
            device=None if args.device == "auto" else args.device,
            progress=not args.quiet,
        )
    else:
        missing = [
            flag
            for flag, value in (
                ("RECIPE", args.recipe),
                ("-d/--dataset", args.dataset),
                ("-o/--output", args.output),
            )
            if not value
        ]
        if missing:
            raise LesionsegError(f"missing {', '.join(missing)} (or give --resume DIR)")
        overrides = dict(args.overrides)
        if args.epochs is not None:
            if args.epochs < 1:
                raise LesionsegError(f"--epochs must be ≥ 1, got {args.epochs}")
            overrides["train.epochs"] = args.epochs
        result = train(
            args.recipe,
            args.dataset,
            args.output,
            fold=args.fold,
            folds=args.folds,
            seed=args.seed,
            device=args.device,
            cache=args.cache,
            overrides=overrides,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        best = "" if result.best_dice is None else f", best validation Dice {result.best_dice:.4f}"
        print(f"trained {result.epochs} epoch(s) in {result.seconds:.0f} s{best}")
        print(f"model: {result.out_dir}  (log.csv, progress.png, last/)")
    return 0
