"""``lesionseg predict``: segment subjects with a trained model or an ensemble."""

from __future__ import annotations

import argparse
import sys
import time

from lesionseg.errors import LesionsegError

NAME = "predict"
ORDER = 40
HELP = "segment subjects with one or more trained models (label maps on the input grid)"
DESCRIPTION = """Segment the subjects given with -i using the trained model(s) given with -m.

Inputs (-i) are the image files of one subject (in the model's channel order, or
NAME=path), a data set (a folder with dataset.json or a CSV manifest; its test cases,
or every case with --all), or a folder of files named <case>_0000.nii.gz, ...
Channels are matched to the model's by name. Each model's own preprocessing is
applied; the outputs are written on the input's grid with its header:
<case>_seg.nii.gz (labels) and, with --save-probabilities, <case>_prob.nii.gz.
Several -m average their probabilities (ensemble).

examples:
  lesionseg predict -m models/dm -i T1.nii.gz FLAIR.nii.gz -o out
  lesionseg predict -m models/dm1 -m models/dm2 -i data/ms -o out --tta"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg predict``."""
    parser.add_argument(
        "-m",
        "--model",
        action="append",
        required=True,
        metavar="MODEL_DIR",
        help="trained model folder; repeat for an ensemble",
    )
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--tta", action="store_true", help="average with the sagittally flipped prediction"
    )
    parser.add_argument(
        "--save-probabilities", action="store_true", help="also write <case>_prob.nii.gz"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace earlier outputs (only in a folder lesionseg made for predictions)",
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
        help="case name for the files of one subject (default: from the first channel's file)",
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision (mainly for CUDA)")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")


def check_device(name: str) -> str:
    """Validate ``--device``.

    Raises:
        LesionsegError: Unknown device or CUDA not available.
    """
    import torch

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
    raise LesionsegError(f"--device {name!r}: expected cpu, cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    """Predict every subject, with a progress bar."""
    from tqdm import tqdm

    from lesionseg.inference.inputs import subjects_from_inputs
    from lesionseg.inference.pipeline import (
        check_channels,
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
    models = load_models(args.model, device=device)
    subjects = subjects_from_inputs(
        args.input, required_channels(models), all_cases=args.all, subject_id=args.name
    )
    for subject in subjects:
        check_channels(subject, models)
    if args.overwrite and args.skip_existing:
        raise LesionsegError("--overwrite and --skip-existing exclude each other")
    todo = prepare_predictions(
        args.output,
        [s.id for s in subjects],
        args.save_probabilities,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        inputs=args.input,
    )
    if len(todo) < len(subjects):
        print(f"{len(subjects) - len(todo)} subject(s) done already, skipped", file=sys.stderr)
    subjects = [s for s in subjects if s.id in set(todo)]
    start = time.perf_counter()
    bar = tqdm(subjects, desc="predict", unit="subject", disable=len(subjects) < 2)
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
            overwrite=args.overwrite,
            amp=args.amp,
            batch_size=args.batch_size,
        )
        extra = f" and {out.probabilities}" if out.probabilities else ""
        tqdm.write(f"{subject.id}: {out.segmentation}{extra} ({time.perf_counter() - t0:.1f} s)")
    print(f"{len(subjects)} subject(s) in {time.perf_counter() - start:.1f} s -> {args.output}")
    return 0
