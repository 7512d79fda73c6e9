"""``lesionseg report``: per-lesion tables, locations and HTML pages for predictions."""

from __future__ import annotations

import argparse
import sys

from lesionseg.cli.options import add_overwrite, add_quiet
from lesionseg.errors import LesionsegError

NAME = "report"
ORDER = 62
HELP = "per-lesion tables (size, place, location class, uncertainty) and HTML pages"
DESCRIPTION = """Describe every lesion of a folder of predictions, for people.

Per case: <case>_lesions.csv and .json (lesion id, voxels, volume in mm3, centroid in
the scan's world mm, bounding box, mean and maximum probability, mean uncertainty,
the ensemble's detection disagreement, location class) and <case>.html (totals, a
sortable table, orthogonal views of the largest lesions, an interactive viewer); for
the data set: lesions.csv, summary.csv, summary.json and index.html. The pages are
single files that open from disk with no network.

The probabilities, uncertainty and member maps come from what predict wrote beside the
segmentations (--save-probabilities, --save-uncertainty). With the subjects' images
(-i), the chosen channel is registered to the ICBM152 2009a template (SimpleITK:
affine, then a B-spline unless --registration affine) and each lesion gets a McDonald
location class as LST-AI gives it: after a one-voxel dilation, touching the ventricles:
periventricular; else touching the cortex: juxtacortical; else infratentorial; else
subcortical. The registration only moves the template: the table stays in the scan's
own coordinates. A lesion is a connected component (--connectivity, default 26) of at
least --min-size voxels; both are written with every table.

examples:
  lesionseg report out/dm -i data/ms -o out/dm-report
  lesionseg report out/dm -i data/ms -o out/dm-report --channel FLAIR --registration affine
  lesionseg predict -m models/a -m models/b -i data/ms -o out --save-uncertainty --report"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg report``."""
    parser.add_argument("predictions", metavar="PRED_DIR", help="folder lesionseg predict wrote")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="report folder")
    add_report_options(parser)
    parser.add_argument(
        "-i",
        "--images",
        nargs="+",
        metavar="INPUT",
        help="the subjects' images: a data set (folder with dataset.json or a CSV), a "
        "folder of <case>_0000.nii.gz files (see --channel-names), or NAME=path files of "
        "one subject; without it there are no location classes",
    )
    parser.add_argument(
        "--channel-names",
        nargs="+",
        metavar="NAME",
        help="what the _0000, _0001, ... files of an -i folder are (default: 0000, 0001, ...)",
    )
    add_overwrite(parser, "report (only in a folder lesionseg made for one)")
    add_quiet(parser)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """The options ``report`` shares with ``predict --report``."""
    group = parser.add_argument_group("report")
    group.add_argument(
        "--channel", metavar="NAME", help="channel shown on the pages (default: the registered one)"
    )
    group.add_argument(
        "--register-channel",
        metavar="NAME",
        help="channel registered to the T1 template (default: T1, else FLAIR, T2, the first)",
    )
    group.add_argument(
        "--registration",
        choices=("bspline", "affine", "none"),
        default="bspline",
        help="to the template: affine then B-spline (default), affine only (faster), or "
        "none (no location classes)",
    )
    group.add_argument(
        "--connectivity",
        type=int,
        choices=(6, 18, 26),
        default=26,
        help="voxel connectivity of a lesion (default 26)",
    )
    group.add_argument(
        "--min-size",
        type=int,
        default=1,
        metavar="VOXELS",
        help="smallest lesion counted, in voxels (default 1)",
    )
    group.add_argument(
        "--lesion-labels",
        type=int,
        nargs="+",
        metavar="V",
        help="label values counted as lesion (default: every value > 0)",
    )
    group.add_argument(
        "--largest", type=int, default=5, metavar="N", help="lesions pictured per page"
    )
    group.add_argument(
        "--no-viewer", action="store_true", help="leave the interactive viewer out of the pages"
    )


def report_settings(args: argparse.Namespace):
    """The :class:`~lesionseg.report.build.ReportSettings` of the options.

    Raises:
        LesionsegError: A negative size or count.
    """
    from lesionseg.report.build import ReportSettings

    if args.min_size < 1:
        raise LesionsegError("--min-size must be at least 1 voxel")
    if args.largest < 0:
        raise LesionsegError("--largest must be 0 or more")
    return ReportSettings(
        connectivity=args.connectivity,
        min_size_voxels=args.min_size,
        lesion_labels=tuple(args.lesion_labels) if args.lesion_labels else None,
        registration=args.registration,
        channel=args.channel,
        register_channel=args.register_channel,
        viewer=not args.no_viewer,
        largest=args.largest,
    )


def _subjects(args: argparse.Namespace) -> list:
    from pathlib import Path

    from lesionseg.inference.inputs import subjects_from_inputs

    if not args.images:
        return []
    names = args.channel_names or [f"{i:04d}" for i in range(1000)]
    first = Path(args.images[0])
    if len(args.images) > 1 or not first.is_dir() or (first / "dataset.json").is_file():
        named = [str(i) for i in args.images if "=" in str(i)]
        if len(args.images) > 1 and len(named) != len(args.images) and not args.channel_names:
            raise LesionsegError("-i: give the files of one subject as NAME=path")
        names = args.channel_names or [str(i).split("=", 1)[0] for i in args.images]
    return subjects_from_inputs(args.images, names, all_cases=True)


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it is."""
    from lesionseg.report.build import write_report

    settings = report_settings(args)
    tables = write_report(
        args.predictions,
        args.output,
        _subjects(args),
        settings,
        overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    lesions = sum(len(t.lesions) for t in tables)
    print(f"{len(tables)} case(s), {lesions} lesion(s) -> {args.output}/index.html")
    return 0
