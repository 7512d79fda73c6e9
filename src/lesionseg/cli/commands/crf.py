"""``lesionseg crf``: refine a probability map with DeepMedic's 3D fully connected CRF."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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

example:
  lesionseg crf --prob case_prob.nii.gz --image flair.nii.gz --image t1.nii.gz -o case_crf.nii.gz
  lesionseg crf --prob p.nii.gz --image t1.nii.gz -o seg.nii.gz --params crf.json \\
      --save-probabilities p_crf.nii.gz"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg crf``."""
    parser.add_argument(
        "--prob", required=True, help="probabilities (4D, one map per class; or 3D)"
    )
    parser.add_argument(
        "--image", action="append", required=True, help="an image channel (repeat for each channel)"
    )
    parser.add_argument("-o", "--output", required=True, help="label map to write (.nii.gz)")
    parser.add_argument("--params", help="CRF parameters (JSON/YAML, e.g. from crf-tune)")
    parser.add_argument(
        "--save-probabilities", metavar="FILE", help="also write refined probabilities"
    )
    parser.add_argument("--no-zscore", action="store_true", help="use the images as they are")
    parser.add_argument("--threads", type=int, help="threads for the CRF kernels")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args: argparse.Namespace) -> int:
    """Load inputs, run the CRF, write labels (and probabilities)."""
    import numpy as np

    from lesionseg.data.nifti import is_nifti_path, save_nifti
    from lesionseg.postprocess.crf import crf_labels, dense_crf, resolve_params
    from lesionseg.postprocess.crf.io import load_channels, load_probabilities, zscore_channels

    outputs = [Path(args.output)] + (
        [Path(args.save_probabilities)] if args.save_probabilities else []
    )
    for path in outputs:
        if not is_nifti_path(path):
            raise LesionsegError("output must end in .nii or .nii.gz", path)
        if path.exists() and not args.overwrite:
            raise LesionsegError("exists already; use --overwrite to replace it", path)
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise LesionsegError("--output and --save-probabilities must be different files")
    if args.threads is not None and args.threads < 1:
        raise LesionsegError(f"--threads must be at least 1, got {args.threads}")
    params = resolve_params(args.params)
    probs, prob_grid = load_probabilities(args.prob)
    image, grid = load_channels(args.image, prob_grid)
    if not args.no_zscore:
        image = zscore_channels(image)
    start = time.perf_counter()
    refined = dense_crf(probs, image, grid.spacing, params, threads=args.threads, progress=True)
    labels = crf_labels(refined)
    save_nifti(labels, grid, outputs[0], overwrite=args.overwrite)
    if args.save_probabilities:
        save_nifti(np.moveaxis(refined, 0, -1), grid, outputs[1], overwrite=args.overwrite)
    changed = int(np.count_nonzero(labels != np.argmax(probs, axis=0)))
    print(
        f"CRF: {labels.size} voxels, {changed} labels changed, "
        f"{time.perf_counter() - start:.1f} s -> {outputs[0]}"
    )
    return 0
