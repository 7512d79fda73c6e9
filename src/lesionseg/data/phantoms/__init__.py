"""Realistic multi-modal brain MRI phantoms with known lesions, on real anatomy.

The embedded default data set of lesionseg: the ICBM152 2009a templates shipped with
nilearn give the anatomy; each subject gets its own random deformation, lesions,
contrasts, bias field and Rician noise. Four tasks mirror the papers' data:
``ms`` (T1, T2, PD, FLAIR), ``tumor`` (T1, T1c, T2, FLAIR; BRATS labels 0-4),
``stroke-acute`` (DWI, ADC; 5 mm slices) and ``stroke-chronic`` (T1).

Example:
    >>> from lesionseg.data.phantoms import synthesize
    >>> synthesize("ms", "data/ms", subjects=20, seed=0, spacing=2.0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lesionseg import __version__
from lesionseg.data.atomic import write_json_atomic
from lesionseg.data.phantoms.base import PhantomTask
from lesionseg.data.phantoms.generate import Phantom, generate_subject
from lesionseg.data.phantoms.registry import get_task, task_names
from lesionseg.data.phantoms.writer import (
    case_record,
    dataset_json,
    prepare_output,
    write_case,
    write_metadata,
)
from lesionseg.errors import LesionsegError

__all__ = ["Phantom", "generate_subject", "get_task", "synthesize", "task_names"]


def synthesize(
    task: str,
    out_dir: str | Path,
    subjects: int = 20,
    seed: int = 0,
    spacing: float = 1.0,
    slice_thickness: float | None = None,
    test_fraction: float = 0.2,
    snr: float | None = None,
    overwrite: bool = False,
    progress: Callable[[Phantom], None] | None = None,
) -> Path:
    """Generate a phantom data set in the nnU-Net v2 / MSD layout.

    Args:
        task: ``ms``, ``tumor``, ``stroke-acute`` or ``stroke-chronic``.
        out_dir: Output folder (created; must be empty unless ``overwrite``).
        subjects: Number of cases.
        seed: Data set seed; case ``k`` depends only on task, seed and ``k``.
        spacing: In-plane voxel size in mm (isotropic unless ``slice_thickness``).
        slice_thickness: Slice thickness in mm (default: the task's, 5 mm for
            ``stroke-acute``, else ``spacing``).
        test_fraction: Share of cases (the last ones) put in the test split; at least
            one case stays in training.
        snr: White-matter signal-to-noise ratio (default: the task's).
        overwrite: Replace the phantom files of an existing data set.
        progress: Called with each case once it is written (e.g. to draw a preview of
            the first one or advance a progress bar).

    Returns:
        The output folder.

    Raises:
        LesionsegError: Unknown task, bad sizes, or a non-empty output without ``overwrite``.
    """
    phantom_task = get_task(task)
    check_settings(subjects, test_fraction, spacing, slice_thickness, snr)
    out = prepare_output(out_dir, overwrite)
    n_test = min(int(round(subjects * test_fraction)), subjects - 1)
    n_train = subjects - n_test
    records = []
    for index in range(subjects):
        split = "train" if index < n_train else "test"
        phantom = generate_subject(
            phantom_task, index, seed, spacing, slice_thickness, -1.0 if snr is None else snr
        )
        write_case(out, phantom_task, phantom, split)
        records.append(case_record(phantom, split))
        if progress is not None:
            progress(phantom)
        del phantom
    write_metadata(out, phantom_task, records)
    settings = {
        **data_set_settings(phantom_task, seed, subjects, spacing, slice_thickness, snr),
        "lesionseg_version": __version__,
    }
    write_json_atomic(
        out / "dataset.json", dataset_json(phantom_task, n_train, n_test, settings, records)
    )
    return out


def check_settings(
    subjects: int,
    test_fraction: float,
    spacing: float,
    slice_thickness: float | None,
    snr: float | None,
) -> None:
    """Refuse settings no phantom writer can use (the nnU-Net layout and BIDS alike).

    Raises:
        LesionsegError: Naming the option and its allowed range.
    """
    if subjects < 1:
        raise LesionsegError(f"--subjects must be at least 1, got {subjects}")
    if not 0.0 <= test_fraction < 1.0:
        raise LesionsegError(f"test fraction must be in [0, 1), got {test_fraction}")
    if spacing <= 0 or spacing > 8:
        raise LesionsegError(f"--spacing must be in (0, 8] mm, got {spacing}")
    if slice_thickness is not None and not 0 < slice_thickness <= 10:
        raise LesionsegError(f"--slice-thickness must be in (0, 10] mm, got {slice_thickness}")
    if snr is not None and snr <= 0:
        raise LesionsegError(f"--snr must be positive, got {snr}")


def data_set_settings(
    task: PhantomTask,
    seed: int,
    subjects: int,
    spacing: float,
    slice_thickness: float | None,
    snr: float | None,
) -> dict:
    """The settings a phantom data set records (with the task's defaults filled in)."""
    return {
        "task": task.name,
        "seed": seed,
        "subjects": subjects,
        "spacing_mm": spacing,
        "slice_thickness_mm": slice_thickness or task.default_thickness or spacing,
        "snr": snr or task.default_snr,
    }
