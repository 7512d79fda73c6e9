"""``lesionseg synth``: generate a phantom data set (the embedded default data)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lesionseg.cli.options import add_quiet
from lesionseg.errors import LesionsegError

if TYPE_CHECKING:  # the phantoms load when the command runs, not for `lesionseg --help`
    from lesionseg.data.phantoms import Phantom

NAME = "synth"
ORDER = 5
HELP = "generate a phantom data set with known lesions (ms, tumor, stroke-acute, stroke-chronic)"
DESCRIPTION = """Generate realistic multi-modal brain MRI phantoms with known lesions on real
anatomy (ICBM152 templates shipped with nilearn), in the nnU-Net/MSD layout that every lesionseg
command reads, or with --bids as a raw BIDS data set (labels in derivatives/lesionseg-phantoms).
The same seed gives identical files; subject k is the same whatever --subjects.

tasks:
  ms              T1, T2, PD, FLAIR; small ovoid and confluent lesions (as MSSEG 2016)
  tumor           T1, T1c, T2, FLAIR; BRATS labels 1 necrosis, 2 oedema, 3 non-enh., 4 enh.
  stroke-acute    DWI, ADC; 5 mm slices; infarcts and lesion-like artefacts (as the EDD Net data)
  stroke-chronic  T1; cavities of very different sizes (as ATLAS)
  all             every task, into DIR/<task>/

examples:
  lesionseg synth ms -o data/ms --subjects 20 --seed 0 --spacing 2
  lesionseg synth all -o data --subjects 1 --spacing 1.5 --preview docs/phantoms.png
  lesionseg synth ms -o bids/ms --subjects 4 --spacing 2 --bids   (raw BIDS: lesionseg bids)"""

#: Channel drawn in three views in previews.
PREVIEW_CHANNEL = {"ms": "FLAIR", "tumor": "T1c", "stroke-acute": "DWI", "stroke-chronic": "T1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg synth``."""
    from lesionseg.data.phantoms import task_names

    parser.add_argument("task", choices=[*task_names(), "all"], help="which phantoms")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--subjects", type=int, default=20, help="number of cases (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--spacing", type=float, default=1.0, help="in-plane voxel size in mm (default 1)"
    )
    parser.add_argument(
        "--slice-thickness",
        type=float,
        default=None,
        help="slice thickness in mm (default: 5 for stroke-acute, else the spacing)",
    )
    parser.add_argument(
        "--snr", type=float, default=None, help="white-matter SNR (default: the task's)"
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of cases in the test split (default 0.2)",
    )
    parser.add_argument(
        "--preview",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the first case of each task (orthogonal slices, lesion outlines)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    parser.add_argument(
        "--bids",
        action="store_true",
        help="write raw BIDS (sub-XXX/anat/sub-XXX_T1w.nii.gz, ...; labels under "
        "derivatives/lesionseg-phantoms) instead of the nnU-Net layout",
    )
    add_quiet(parser)


def _writer(bids: bool) -> Callable[..., Path]:
    """The phantom writer: the nnU-Net layout, or raw BIDS with ``--bids``."""
    if not bids:
        from lesionseg.data.phantoms import synthesize

        return synthesize
    from lesionseg.data.phantoms.bids_writer import synthesize_bids

    return synthesize_bids


def run(args: argparse.Namespace) -> int:
    """Generate the data set(s), then the optional preview."""
    from tqdm import tqdm

    from lesionseg.data.phantoms import get_task, task_names

    tasks = task_names() if args.task == "all" else [args.task]
    if args.preview is not None:
        if args.preview.suffix.lower() != ".png":
            raise LesionsegError("--preview must name a .png file", args.preview)
        if args.preview.exists() and not args.overwrite:
            raise LesionsegError("exists already; use --overwrite to replace it", args.preview)
    firsts: dict[str, Phantom] = {}
    for task in tasks:
        out = args.output / task if args.task == "all" else args.output
        with tqdm(
            total=args.subjects, desc=f"synth {task}", unit="case", disable=args.quiet
        ) as bar:

            def progress(phantom: Phantom, task: str = task, bar=bar) -> None:
                if args.preview is not None and task not in firsts:
                    firsts[task] = phantom
                bar.update(1)

            _writer(args.bids)(
                task,
                out,
                subjects=args.subjects,
                seed=args.seed,
                spacing=args.spacing,
                slice_thickness=args.slice_thickness,
                test_fraction=args.test_fraction,
                snr=args.snr,
                overwrite=args.overwrite,
                progress=progress,
            )
        layout = " (BIDS)" if args.bids else ""
        print(f"{task}: {args.subjects} cases written to {out}{layout}")
    if args.preview is not None:
        from lesionseg.report.slices import SliceRow, save_slices

        rows = []
        for task, phantom in firsts.items():
            spec = get_task(task)
            rows.append(
                SliceRow(
                    title=f"{task} ({phantom.id})",
                    images=phantom.images,
                    spacing=phantom.spacing,
                    label=phantom.label,
                    main=PREVIEW_CHANNEL.get(task),
                    label_names=spec.labels if len(spec.labels) > 2 else {},
                )
            )
        save_slices(rows, args.preview)
        print(f"preview: {args.preview}")
    return 0
