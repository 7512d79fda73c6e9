"""``lesionseg evaluate``: compare predicted label maps with references."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lesionseg.errors import LesionsegError

NAME = "evaluate"
ORDER = 60
HELP = "metrics of predictions against reference labels (voxel, surface, lesion-wise)"
DESCRIPTION = """Compare predicted label maps with reference label maps: Dice, precision,
sensitivity, specificity, volumes, Hausdorff/HD95/ASSD in mm, lesion-wise counts and
scores with the rules of a named challenge tool (--preset), global Dice, mean (SD)
summaries, a Dice box plot for several methods and paired tests (--compare).

Predictions: a folder of <case>_seg.nii.gz or <case>.nii.gz files, or files; give
--pred once per method, optionally named NAME=FOLDER. References: a folder, files,
or a data set (folder with dataset.json, or a CSV manifest with a label column).
Files are paired by case id: the name without .nii[.gz] and a trailing _seg. With a
data set as reference, its labelled cases of the split(s) predicted are expected
(predict predicts the test split).

Every reference case needs a prediction of every method: a missing one is an error
(as in nnU-Net's evaluation without --chill), unless --missing-as-empty scores it as
an empty prediction or --allow-missing leaves it out of the means. Missing cases are
always listed on the summary, in evaluation.json and summary.csv, and on stderr.

examples:
  lesionseg evaluate --pred out/deepmedic --ref data/brats --regions brats -o eval
  lesionseg evaluate --pred A=out/a --pred B=out/b --ref labels/ --compare A B -o eval
  lesionseg evaluate --pred out/ --ref data/isles --preset isles22 msseg edd --groups"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg evaluate``."""
    # the metric modules load here, for this command only (not for `lesionseg --help`)
    from lesionseg.evaluation.lesionwise import PRESETS
    from lesionseg.evaluation.regions import REGION_SCHEMES
    from lesionseg.evaluation.surface import HD95_VARIANTS

    parser.add_argument(
        "--pred",
        action="append",
        nargs="+",
        required=True,
        metavar="[NAME=]PATH",
        help="prediction folder or files of one method (repeat per method)",
    )
    parser.add_argument(
        "--ref",
        nargs="+",
        required=True,
        metavar="PATH",
        help="reference folder, files, or data set",
    )
    parser.add_argument(
        "-o",
        "--output",
        help="folder for cases.csv, summary.md/.csv, "
        "evaluation.json and dice_boxplot.png (default: print only)",
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        type=int,
        metavar="V",
        help="label values to evaluate one by one (default: all present)",
    )
    parser.add_argument(
        "--regions",
        choices=sorted(REGION_SCHEMES),
        help="merged regions: brats = BRATS 2012-2021 labels (enhancing tumour 4): whole "
        "1-4, core 1,3,4, enhancing 4; brats2023 = BraTS 2023 labels (enhancing tumour 3): "
        "WT 1-3, TC 1,3, ET 3 (a warning says when the labels look like the other one)",
    )
    parser.add_argument(
        "--preset",
        nargs="+",
        default=["isles22"],
        metavar="NAME",
        help=f"lesion-wise presets, or 'all' or 'none' (known: "
        f"{', '.join(PRESETS.names())}; default isles22)",
    )
    parser.add_argument(
        "--connectivity",
        type=int,
        choices=(6, 18, 26),
        help="override the presets' connected-component connectivity",
    )
    parser.add_argument(
        "--hd95",
        choices=HD95_VARIANTS,
        default="monai",
        help="HD95 definition (default monai; see docs/metrics.md)",
    )
    parser.add_argument(
        "--no-surface", action="store_true", help="skip surface distances (Hausdorff, HD95, ASSD)"
    )
    parser.add_argument(
        "--empty-distance",
        type=float,
        default=math.nan,
        metavar="MM",
        help="value of the surface distances hd_mm, hd95_<variant>_mm and assd_mm "
        "(Hausdorff, HD95, ASSD) for a case where exactly one of prediction and reference "
        "is empty (default: undefined, NaN, left out of the means and shown as [n=k/N]; "
        "BraTS uses 374); two empty masks always give 0; the lesion-wise brats2023 HD95 "
        "keeps its own 374",
    )
    parser.add_argument(
        "--groups",
        action="store_true",
        help="also summarise small- and large-lesion subjects (EDD split)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="paired t-test and Wilcoxon test between methods A and B",
    )
    parser.add_argument(
        "--compare-metric",
        default="dice",
        metavar="METRIC",
        help="metric for --compare (default dice)",
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="resample predictions on another grid onto the reference (nearest neighbour)",
    )
    missing = parser.add_mutually_exclusive_group()
    missing.add_argument(
        "--missing-as-empty",
        action="store_true",
        help="score a reference case without a prediction as an empty (all-background) "
        "prediction, with the empty-mask values of docs/metrics.md (default: error)",
    )
    missing.add_argument(
        "--allow-missing",
        action="store_true",
        help="leave reference cases without a prediction out of the means, listing them on "
        "the summary and stderr (default: error)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _prediction_sources(groups: list[list[str]]) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for index, items in enumerate(groups):
        first = items[0]
        if "=" in first and not Path(first).exists():
            name, first = first.split("=", 1)
            if not name:
                raise LesionsegError(f"--pred {items[0]!r}: empty method name before '='")
        elif len(items) == 1 and Path(first).is_dir():
            name = Path(first).resolve().name
        else:
            name = f"prediction{index + 1}" if len(groups) > 1 else "prediction"
        base, n = name, 2
        while name in sources:
            name, n = f"{base}_{n}", n + 1
        sources[name] = [first, *items[1:]]
    return sources


def _presets(names: list[str]) -> list[str]:
    from lesionseg.evaluation.lesionwise import PRESETS

    if names == ["none"]:
        return []
    if "all" in names:
        return PRESETS.names()
    for name in names:
        PRESETS.get(name)  # unknown names fail here, with suggestions
    return list(dict.fromkeys(names))


def _missing_policy(args: argparse.Namespace) -> str:
    if args.missing_as_empty:
        return "empty"
    return "skip" if args.allow_missing else "error"


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the summary and write the outputs."""
    from lesionseg.evaluation.api import evaluate
    from lesionseg.evaluation.outputs import check_outputs, summary_markdown, write_outputs

    sources = _prediction_sources(args.pred)
    if args.compare:
        for m in args.compare:
            if m not in sources:
                raise LesionsegError(
                    f"--compare: no method {m!r} (methods: "
                    f"{', '.join(sources)}); name them with --pred NAME=PATH"
                )
    if args.output:
        check_outputs(args.output, plot=len(sources) > 1, overwrite=args.overwrite)
    result = evaluate(
        sources,
        args.ref,
        labels=args.labels,
        regions=args.regions,
        presets=_presets(args.preset),
        hd95=args.hd95,
        surface=not args.no_surface,
        empty_distance=args.empty_distance,
        connectivity=args.connectivity,
        resample=args.resample,
        size_groups=args.groups,
        missing=_missing_policy(args),
        progress=not args.quiet,
    )
    for line in result.warnings:
        print(f"lesionseg {NAME}: warning: {line}", file=sys.stderr)
    comparisons = result.compare(*args.compare, args.compare_metric) if args.compare else []
    print(summary_markdown(result, comparisons))
    if args.output:
        paths = write_outputs(result, args.output, comparisons, overwrite=args.overwrite)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
