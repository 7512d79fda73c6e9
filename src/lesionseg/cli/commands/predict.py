"""``lesionseg predict``: segment subjects with a trained model or an ensemble."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from lesionseg.cli.options import (
    add_device,
    add_models,
    add_overwrite,
    add_quiet,
    add_speed,
    check_device,
    reduced_precision,
)
from lesionseg.errors import LesionsegError

if TYPE_CHECKING:
    from lesionseg.postprocess.overrides import PostprocessOverrides

NAME = "predict"
ORDER = 40
HELP = "segment subjects with one or more trained models (label maps on the input grid)"
DESCRIPTION = """Segment the subjects given with -i using the trained model(s) given with -m.

Inputs (-i) are the image files of one subject (in the model's channel order, or
NAME=path), a data set (a folder with dataset.json or a CSV manifest; its test cases,
or every case with --all), or a folder of files named <case>_0000.nii.gz, ...
Channels are matched to the model's by name. Each model's own preprocessing is
applied; the outputs are written on the input's grid with its header:
<case>_seg.nii.gz (labels) and, with --save-probabilities, <case>_prob.nii.gz
(--naming nnunet: <case>.nii.gz, as nnU-Net's tools expect). The files of one subject
are named by what their names share (s1_t1.nii.gz, s1_flair.nii.gz: s1) unless --name.
Several -m average their probabilities (ensemble).

Post-processing: the recipe's predict.postprocess steps run on the grid the model
predicts on (after its preprocessing, e.g. resampling), before the labels are mapped
back to the input grid. --postprocess crf, --threshold and --min-lesion-size each
replace the recipe's step of that name (keeping its other settings, such as tuned CRF
parameters) or add it in the order crf -> threshold -> min-lesion-size, before the
recipe's other label steps; --postprocess none drops the recipe's steps first.

examples:
  lesionseg predict -m models/dm -i T1.nii.gz FLAIR.nii.gz -o out
  lesionseg predict -m models/dm1 -m models/dm2 -i data/ms -o out --tta
  lesionseg predict -m models/dm -i data/ms -o out --threshold 0.6 --min-lesion-size 10"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg predict``."""
    add_models(parser)
    parser.add_argument(
        "-i",
        "--input",
        nargs="+",
        required=True,
        metavar="INPUT",
        help="files of one subject, a data set (folder/CSV), or a folder of <case>_0000.nii.gz",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help="output tile side in voxels (default: chosen from the free memory)",
    )
    add_device(parser)
    parser.add_argument(
        "--tta", action="store_true", help="average with the sagittally flipped prediction"
    )
    parser.add_argument(
        "--save-probabilities", action="store_true", help="also write <case>_prob.nii.gz"
    )
    add_overwrite(parser, "predictions (only in a folder lesionseg made for them)")
    add_quiet(parser)
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="predict only the K-th of N shares of the subjects (a cluster job array; "
        "under torchrun each process takes its RANK's share without it)",
    )
    parser.add_argument(
        "--naming",
        choices=("lesionseg", "nnunet"),
        default="lesionseg",
        help="output names: <case>_seg.nii.gz (default) or nnU-Net's <case>.nii.gz",
    )
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave subjects whose outputs exist (finish an interrupted run)",
    )
    parser.add_argument(
        "--all", action="store_true", help="for a data set: every case, not only the test split"
    )
    parser.add_argument(
        "--name",
        default=None,
        metavar="CASE",
        help="case name for the files of one subject (default: what their names share)",
    )
    add_speed(parser)
    parser.add_argument(
        "--save-uncertainty",
        action="store_true",
        help="also write <case>_uncertainty.nii.gz (entropy of the mean, mutual information) "
        "and <case>_members.nii.gz (each prediction's labels), from the ensemble members "
        "(-m A -m B), the flips of --tta and the passes of --mc-dropout",
    )
    parser.add_argument(
        "--mc-dropout",
        type=int,
        default=0,
        metavar="N",
        help="N Monte-Carlo dropout passes per model (networks with dropout), averaged",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="then write `lesionseg report` into OUTDIR/report (with the report options)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    parser.add_argument(
        "--variant",
        default=None,
        metavar="NAME",
        help="one of the recipe's prediction variants (its graph and post-processing; "
        "e.g. gated for the MSSEG cascade's later rule); `lesionseg describe MODEL` lists them",
    )
    from lesionseg.cli.commands.report import add_report_options

    add_report_options(parser)
    post = parser.add_argument_group("post-processing (overrides the recipe's steps)")
    post.add_argument(
        "--postprocess",
        choices=("crf", "none"),
        default=None,
        help="crf: add the 3D CRF (with the recipe's CRF settings if it has a crf step); "
        "none: drop the recipe's steps (the other options below still apply)",
    )
    post.add_argument(
        "--threshold",
        type=_probability,
        default=None,
        metavar="P",
        help="label a voxel with its most probable foreground class among those of "
        "probability >= P, else background (default: the most probable class)",
    )
    post.add_argument(
        "--min-lesion-size",
        type=_size,
        default=None,
        metavar="N",
        help="remove lesions (26-connected components of a class) smaller than N "
        "(see --min-lesion-unit), measured on the grid the model predicts on",
    )
    post.add_argument(
        "--min-lesion-unit",
        choices=("mm3", "voxels"),
        default=None,
        help="unit of --min-lesion-size: mm3 (default; from the voxel size of the "
        "preprocessed grid, so independent of resampling) or voxels of that grid",
    )


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def _size(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a size >= 0, got {text}")
    return value


def postprocess_overrides(args: argparse.Namespace) -> PostprocessOverrides:
    """The post-processing options, to merge into the recipe's steps.

    Raises:
        LesionsegError: ``--min-lesion-unit`` without ``--min-lesion-size``.
    """
    from lesionseg.postprocess.overrides import PostprocessOverrides

    if args.min_lesion_unit is not None and args.min_lesion_size is None:
        raise LesionsegError("--min-lesion-unit needs --min-lesion-size")
    return PostprocessOverrides(
        crf=args.postprocess == "crf",
        clear=args.postprocess == "none",
        threshold=args.threshold,
        min_lesion_size=args.min_lesion_size,
        min_lesion_unit=args.min_lesion_unit or "mm3",
    )


def run(args: argparse.Namespace) -> int:
    """Predict every subject, with a progress bar."""
    from tqdm import tqdm

    from lesionseg.inference.inputs import parse_shard, shard_subjects, subjects_from_inputs
    from lesionseg.inference.pipeline import (
        check_channels,
        file_channels,
        load_models,
        predict_subject,
        prepare_predictions,
        required_channels,
    )

    device = check_device(args.device)
    if args.tile is not None and args.tile < 1:
        raise LesionsegError("--tile must be a positive number of voxels")
    if args.batch_size < 1:
        raise LesionsegError("--batch-size must be at least 1")
    postprocess = postprocess_overrides(args)
    if args.report:
        from lesionseg.cli.commands.report import report_settings

        settings = report_settings(args)  # bad report options fail before any work
    models = load_models(args.model, device=device)
    if args.variant is not None:
        models = [m.variant(args.variant) for m in models]
    subjects = subjects_from_inputs(
        args.input,
        required_channels(models),
        all_cases=args.all,
        subject_id=args.name,
        file_channels=file_channels(models),
    )
    amp = reduced_precision(args, models, device)
    shard = parse_shard(args.shard)
    subjects = shard_subjects(subjects, shard)
    for subject in subjects:
        check_channels(subject, models)
    from lesionseg.inference.pipeline import check_mc_dropout, check_uncertainty

    check_mc_dropout(models, args.mc_dropout)
    check_uncertainty(models, args.tta, args.mc_dropout, args.save_uncertainty)
    if args.overwrite and args.skip_existing:
        raise LesionsegError("--overwrite and --skip-existing exclude each other")
    todo = prepare_predictions(
        args.output,
        [s.id for s in subjects],
        args.save_probabilities,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        inputs=args.input,
        naming=args.naming,
        save_uncertainty=args.save_uncertainty,
    )
    if len(todo) < len(subjects) and not args.quiet:
        print(f"{len(subjects) - len(todo)} subject(s) done already, skipped", file=sys.stderr)
    subjects_all = list(subjects)
    subjects = [s for s in subjects if s.id in todo]
    start = time.perf_counter()
    bar = tqdm(subjects, desc="predict", unit="subject", disable=len(subjects) < 2 or args.quiet)
    for subject in bar:
        bar.set_postfix_str(subject.id)
        t0 = time.perf_counter()
        out = predict_subject(
            models,
            subject,
            args.output,
            tile_size=args.tile,
            device=device,
            tta=args.tta,
            save_probabilities=args.save_probabilities,
            overwrite=todo[subject.id],
            amp=amp,
            batch_size=args.batch_size,
            postprocess=postprocess,
            naming=args.naming,
            save_uncertainty=args.save_uncertainty,
            mc_dropout=args.mc_dropout,
            layout=args.layout,
        )
        extra = f" and {out.probabilities}" if out.probabilities else ""
        if not args.quiet:
            seconds = time.perf_counter() - t0
            tqdm.write(f"{subject.id}: {out.segmentation}{extra} ({seconds:.1f} s)")
    share = f" (share {shard[0]}/{shard[1]})" if shard[1] > 1 else ""
    seconds = time.perf_counter() - start
    print(f"{len(subjects)} subject(s){share} in {seconds:.1f} s -> {args.output}")
    if args.report:
        from pathlib import Path

        from lesionseg.report.build import write_report

        every = {s.id: s for s in subjects_all}
        report_dir = Path(args.output) / "report"
        tables = write_report(
            args.output,
            report_dir,
            list(every.values()),
            settings,
            overwrite=True,
            progress=not args.quiet,
            cases=list(every),
        )
        print(f"report: {len(tables)} case(s) -> {report_dir / 'index.html'}")
    return 0
