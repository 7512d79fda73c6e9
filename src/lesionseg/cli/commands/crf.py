"""``lesionseg crf``: refine a probability map with DeepMedic's 3D fully connected CRF."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lesionseg.cli.options import add_dataset, add_overwrite, add_quiet
from lesionseg.errors import LesionsegError

NAME = "crf"
ORDER = 60
HELP = "refine class probabilities with the 3D fully connected CRF (DeepMedic)"
DESCRIPTION = """Refine class probabilities with the 3D fully connected CRF of DeepMedic
(mean field, Potts model, smoothness and appearance Gaussian kernels; spatial σ in mm).
Probabilities: a 4D NIfTI with one map per class, or a 3D foreground probability.
Images: one 3D NIfTI per channel on the same grid, z-scored inside their non-zero
voxels unless they already are. Labels (and refined probabilities) are written on the
input grid. Parameters default to the official ones; tune them with `lesionseg crf-tune`.

A folder of cases: --prob-dir with the folder `lesionseg predict --save-probabilities`
wrote, the images from a data set (-d) or a folder of <case>_XXXX files (--image-dir),
and -o a folder for <case>_seg.nii.gz (and <case>_prob.nii.gz).

example:
  lesionseg crf --prob case_prob.nii.gz --image flair.nii.gz --image t1.nii.gz -o case_crf.nii.gz
  lesionseg crf --prob-dir predictions -d data/ms -o crf --save-probabilities
  lesionseg crf --prob p.nii.gz --image t1.nii.gz -o seg.nii.gz --params crf.json \\
      --save-probabilities p_crf.nii.gz"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg crf``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prob", help="probabilities of one case (4D, one map per class; or 3D)")
    source.add_argument(
        "--prob-dir",
        help="a folder of <case>_prob.nii.gz maps (lesionseg predict --save-probabilities)",
    )
    parser.add_argument(
        "--image", action="append", help="with --prob: an image channel (repeat for each)"
    )
    images = parser.add_mutually_exclusive_group()
    add_dataset(images, required=False, help="with --prob-dir: the data set of the images")
    images.add_argument(
        "--image-dir", help="with --prob-dir: a folder of <case>_0000.nii.gz, ... images"
    )
    parser.add_argument(
        "-o", "--output", required=True, help="label map to write (.nii.gz), or a folder"
    )
    parser.add_argument("--params", help="CRF parameters (JSON/YAML, e.g. from crf-tune)")
    parser.add_argument(
        "--save-probabilities",
        nargs="?",
        const=True,
        metavar="FILE",
        help="also write the refined probabilities (<case>_prob.nii.gz, or FILE for one case)",
    )
    parser.add_argument("--no-zscore", action="store_true", help="use the images as they are")
    parser.add_argument("--threads", type=int, help="threads for the CRF kernels")
    add_overwrite(parser)
    add_quiet(parser)


#: (case, probabilities, images, labels to write, probabilities to write or None)
CaseFiles = tuple[str, Path, list[Path], Path, "Path | None"]


def _case_outputs(args: argparse.Namespace) -> list[CaseFiles]:
    """(case, probabilities, images, labels out, probabilities out or None) per case.

    Raises:
        LesionsegError: Options of the other mode, or outputs that are not NIfTI.
    """
    from lesionseg.data.nifti import is_nifti_path

    save = args.save_probabilities
    if args.prob is not None:
        if not args.image or args.dataset or args.image_dir:
            raise LesionsegError("--prob takes its channels with --image (one per channel)")
        output = Path(args.output)
        if not is_nifti_path(output):
            raise LesionsegError("output must end in .nii or .nii.gz", output)
        prob_out = None
        if save is True:  # the flag alone: beside the labels
            stem = output.name[: -len(".nii.gz")] if output.name.endswith(".gz") else output.stem
            prob_out = output.with_name(f"{stem.removesuffix('_seg')}_prob.nii.gz")
        elif save:
            prob_out = Path(save)
        return [("case", Path(args.prob), [Path(i) for i in args.image], output, prob_out)]
    if args.image:
        raise LesionsegError("--prob-dir takes its images with -d/--dataset or --image-dir")
    if save not in (None, True):
        raise LesionsegError("with --prob-dir, --save-probabilities takes no file name")
    from lesionseg.postprocess.crf.cases import find_cases

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise LesionsegError("with --prob-dir, -o names a folder", out)
    return [
        (
            case.id,
            case.probabilities,
            case.channels,
            out / f"{case.id}_seg.nii.gz",
            out / f"{case.id}_prob.nii.gz" if save else None,
        )
        for case in find_cases(args.prob_dir, args.dataset, args.image_dir)
    ]


def run(args: argparse.Namespace) -> int:
    """Load inputs, run the CRF, write labels (and probabilities) for each case."""
    import numpy as np

    from lesionseg.data.atomic import make_folder
    from lesionseg.data.nifti import is_nifti_path, save_nifti
    from lesionseg.postprocess.crf import crf_labels, dense_crf, resolve_params
    from lesionseg.postprocess.crf.io import load_channels, load_probabilities, zscore_channels

    cases = _case_outputs(args)
    outputs = [p for *_, labels, probs in cases for p in (labels, probs) if p is not None]
    for path in outputs:  # every output checked before any work
        if not is_nifti_path(path):
            raise LesionsegError("output must end in .nii or .nii.gz", path)
        if path.exists() and not args.overwrite:
            raise LesionsegError("exists already; use --overwrite to replace it", path)
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise LesionsegError("--output and --save-probabilities must be different files")
    if args.threads is not None and args.threads < 1:
        raise LesionsegError(f"--threads must be at least 1, got {args.threads}")
    params = resolve_params(args.params)
    if args.prob_dir is not None:
        make_folder(Path(args.output))
    start = time.perf_counter()
    changed = voxels = 0
    for _case, prob_path, image_paths, labels_out, probs_out in cases:
        probs, prob_grid = load_probabilities(prob_path)
        image, grid = load_channels(image_paths, prob_grid)
        if not args.no_zscore:
            image = zscore_channels(image)
        refined = dense_crf(
            probs, image, grid.spacing, params, threads=args.threads, progress=not args.quiet
        )
        labels = crf_labels(refined)
        save_nifti(labels, grid, labels_out, overwrite=args.overwrite)
        if probs_out is not None:
            save_nifti(np.moveaxis(refined, 0, -1), grid, probs_out, overwrite=args.overwrite)
        changed += int(np.count_nonzero(labels != np.argmax(probs, axis=0)))
        voxels += labels.size
    where = cases[0][3] if args.prob is not None else Path(args.output)
    print(
        f"CRF: {len(cases)} case(s), {voxels} voxels, {changed} labels changed, "
        f"{time.perf_counter() - start:.1f} s -> {where}"
    )
    return 0
