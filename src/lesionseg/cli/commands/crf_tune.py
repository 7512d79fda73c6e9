"""``lesionseg crf-tune``: random search of the CRF parameters on validation cases."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.cli.options import add_dataset, add_quiet
from lesionseg.errors import LesionsegError

NAME = "crf-tune"
ORDER = 61
HELP = "tune the CRF parameters by random search on validation cases (mean Dice)"
DESCRIPTION = """Random search of the 3D CRF's parameters, as DeepMedic's authors did: each trial
runs the CRF on every validation case (probabilities of a trained model) and scores the
mean Dice against the references. Trial 0 is the starting parameters (default: the
official ones), trial 1 the CRF switched off. Prints a table of the trials and writes the
best parameters, which `lesionseg crf --params` and recipes (postprocess: [{crf: {params:
FILE}}]) accept. Probabilities are matched to cases by name: <case>_prob.nii.gz.

example:
  lesionseg crf-tune --prob-dir preds/val --dataset data/ms -o crf.json --trials 40 --seed 0
  lesionseg crf-tune --prob-dir preds --image-dir imgs --ref-dir refs -o crf.yaml"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg crf-tune``."""
    parser.add_argument("--prob-dir", required=True, help="folder of <case>_prob.nii.gz files")
    source = parser.add_mutually_exclusive_group(required=True)
    add_dataset(source, required=False, help="data set (folder or CSV) with images and labels")
    source.add_argument("--image-dir", help="folder of <case>_0000.nii.gz, <case>_0001.nii.gz, ...")
    parser.add_argument("--ref-dir", help="folder of <case>.nii.gz references (overrides labels)")
    parser.add_argument(
        "-o", "--output", required=True, help="parameters file to write (.json/.yaml)"
    )
    parser.add_argument("--trials", type=int, default=30, help="parameter sets to try (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search")
    parser.add_argument("--base", help="starting parameters (JSON/YAML; default: official)")
    parser.add_argument("--anisotropic", action="store_true", help="draw a spatial σ per axis")
    parser.add_argument(
        "--per-channel", action="store_true", help="draw an intensity σ per channel"
    )
    parser.add_argument("--no-zscore", action="store_true", help="use the images as they are")
    parser.add_argument("--threads", type=int, help="threads for the CRF kernels")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    """Load the cases, search, print the table, write the best parameters."""
    from lesionseg.postprocess.crf import resolve_params
    from lesionseg.postprocess.crf.tune import (
        SearchSpace,
        load_tuning_cases,
        random_search,
        save_result,
    )

    output = Path(args.output)
    if output.suffix not in (".json", ".yaml", ".yml"):
        raise LesionsegError("parameters file must end in .json, .yaml or .yml", output)
    if output.exists() and not args.overwrite:
        raise LesionsegError("exists already; use --overwrite to replace it", output)
    if args.trials < 2:
        raise LesionsegError(f"--trials must be at least 2, got {args.trials}")
    if args.threads is not None and args.threads < 1:
        raise LesionsegError(f"--threads must be at least 1, got {args.threads}")
    base = resolve_params(args.base)
    cases = load_tuning_cases(
        args.prob_dir, args.dataset, args.image_dir, args.ref_dir, zscore=not args.no_zscore
    )
    space = SearchSpace(anisotropic=args.anisotropic, per_channel=args.per_channel)
    if not args.quiet:
        print(f"CRF tuning on {len(cases)} case(s), {args.trials} trials, seed {args.seed}")
    result = random_search(
        cases, args.trials, args.seed, space, base, threads=args.threads, progress=not args.quiet
    )
    if not args.quiet:
        print(result.table())
    save_result(result, output, overwrite=args.overwrite)
    best = result.best
    print(f"best: trial {best.index}, mean Dice {best.mean_dice:.4f} -> {output}")
    return 0
