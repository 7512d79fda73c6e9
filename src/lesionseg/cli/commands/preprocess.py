"""``lesionseg preprocess``: write the preprocessed cache that training reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.cli.options import add_dataset, add_quiet, dataset_of
from lesionseg.errors import LesionsegError

NAME = "preprocess"
ORDER = 20
HELP = "preprocess a data set into a fast, memory-mappable cache"
DESCRIPTION = """Preprocess a data set (folder with dataset.json, or CSV/TSV manifest) into a cache:
reorient to RAS, brain mask, crop, optional resampling and N4, per-channel z-score.
Subjects whose inputs and settings did not change since the last run are skipped.

example:
  lesionseg preprocess -d data/ms -o cache/ms --spacing 1
  lesionseg preprocess manifest.csv -o cache/ms --spacing 1.6 1.6 none --n4"""


def _spacing(text: str) -> float | None:
    if text.lower() in ("none", "keep", "-"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a spacing: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("spacing must be positive")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg preprocess``."""
    add_dataset(parser, positional=True)
    parser.add_argument("-o", "--output", required=True, help="cache folder to write")
    parser.add_argument(
        "--spacing",
        nargs="+",
        type=_spacing,
        metavar="MM",
        help="resample to this spacing: one value, or three (RAS axes; 'none' keeps an axis)",
    )
    parser.add_argument("--margin", type=int, default=4, help="voxels kept around the brain box")
    parser.add_argument("--n4", action="store_true", help="N4 bias-field correction")
    parser.add_argument("--no-normalize", action="store_true", help="skip the z-score")
    parser.add_argument("--config", help="YAML file with a preprocess section (overrides flags)")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    """Preprocess the data set and print a summary."""
    import yaml

    from lesionseg.data.dataset import load_dataset
    from lesionseg.preprocess import PreprocessConfig, preprocess_dataset

    dataset = load_dataset(dataset_of(args))
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise LesionsegError("config file not found", path)
        section = yaml.safe_load(path.read_text()) or {}
        config = PreprocessConfig.from_dict(section.get("preprocess", section))
    else:
        spacing = args.spacing
        if spacing is not None and len(spacing) not in (1, 3):
            raise LesionsegError("--spacing takes one value or three")
        config = PreprocessConfig.from_dict(
            {
                "target_spacing": None
                if spacing is None
                else spacing * (3 if len(spacing) == 1 else 1),
                "crop_margin": args.margin,
                "n4": args.n4,
                "normalize": "none" if args.no_normalize else "zscore",
            }
        )
    subjects = dataset.subjects if args.split == "all" else dataset.split(args.split)
    cache = preprocess_dataset(
        dataset, args.output, config, subjects=subjects, progress=not args.quiet
    )
    skipped = len(cache) - cache.newly_written
    print(f"preprocessed {cache.newly_written} subject(s), {skipped} unchanged, into {cache.root}")
    return 0
