"""Random search of the CRF parameters on validation cases, as DeepMedic's authors did.

The paper configured the CRF "by random search" on a set of cases with predictions of a
model (Kamnitsas et al. 2017, §3): each trial draws a parameter set, runs the CRF on
every case and scores the mean Dice against the references; the best set is kept. Trial 0
is always the current parameters (by default the official ones) and trial 1 the CRF
switched off (both weights 0), so the chosen set never scores below either on the tuning
cases. Every draw comes from one seeded generator: the same seed gives the same trials.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lesionseg.errors import LesionsegError
from lesionseg.postprocess.crf.meanfield import check_inputs, dense_crf
from lesionseg.postprocess.crf.params import CRFParams


@dataclass
class TuningCase:
    """One validation case: a model's probabilities, the image and the reference.

    Attributes:
        id: Case identifier.
        probabilities: ``(K, X, Y, Z)`` class probabilities.
        image: ``(C, X, Y, Z)`` image channels (z-scored).
        spacing: Voxel size in mm.
        reference: ``(X, Y, Z)`` reference labels ``0..K-1``.
    """

    id: str
    probabilities: np.ndarray
    image: np.ndarray
    spacing: tuple[float, float, float]
    reference: np.ndarray

    def __post_init__(self) -> None:
        check_inputs(self.probabilities, self.image, self.spacing)
        if self.reference.shape != self.probabilities.shape[1:]:
            raise LesionsegError(
                f"case {self.id}: reference {self.reference.shape} and probabilities "
                f"{self.probabilities.shape[1:]} are on different grids"
            )


@dataclass(frozen=True)
class SearchSpace:
    """Ranges the random search draws from.

    Weights are drawn uniformly, standard deviations log-uniformly (their effect is
    multiplicative), iterations from a list. Spatial σ are isotropic in mm unless
    ``anisotropic``; the intensity σ is shared by all channels unless ``per_channel``.
    """

    iterations: tuple[int, ...] = (2, 3, 5, 8)
    smoothness_weight: tuple[float, float] = (0.0, 10.0)
    smoothness_sigma_mm: tuple[float, float] = (1.0, 6.0)
    appearance_weight: tuple[float, float] = (0.0, 15.0)
    appearance_sigma_mm: tuple[float, float] = (2.0, 30.0)
    intensity_sigma: tuple[float, float] = (1.0, 30.0)
    anisotropic: bool = False
    per_channel: bool = False

    def sample(self, rng: np.random.Generator, base: CRFParams, channels: int) -> CRFParams:
        """One random parameter set (fields not searched keep ``base``'s values)."""

        def log_uniform(bounds: tuple[float, float], size: int) -> tuple[float, ...]:
            low, high = math.log(bounds[0]), math.log(bounds[1])
            return tuple(round(float(math.exp(v)), 3) for v in rng.uniform(low, high, size))

        def spatial(bounds: tuple[float, float]) -> tuple[float, ...]:
            return log_uniform(bounds, 3) if self.anisotropic else log_uniform(bounds, 1) * 3

        return base.with_changes(
            iterations=int(rng.choice(self.iterations)),
            smoothness_weight=round(float(rng.uniform(*self.smoothness_weight)), 3),
            smoothness_sigma_mm=spatial(self.smoothness_sigma_mm),
            appearance_weight=round(float(rng.uniform(*self.appearance_weight)), 3),
            appearance_sigma_mm=spatial(self.appearance_sigma_mm),
            intensity_sigma=log_uniform(self.intensity_sigma, channels if self.per_channel else 1),
        )


@dataclass
class Trial:
    """One evaluated parameter set."""

    index: int
    params: CRFParams
    dice: list[float]
    seconds: float
    note: str = ""

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the cases."""
        return float(np.mean(self.dice))


@dataclass
class TuningResult:
    """All trials, the best one, and the Dice of the probabilities without CRF."""

    trials: list[Trial]
    no_crf_dice: list[float]
    case_ids: list[str] = field(default_factory=list)

    @property
    def best(self) -> Trial:
        """The trial with the highest mean Dice (the earliest on ties)."""
        return max(self.trials, key=lambda t: (t.mean_dice, -t.index))

    def table(self) -> str:
        """The trials as a fixed-width text table, best marked with ``*``."""
        best = self.best.index
        columns = [("trial", 5), ("mean Dice", 9), ("iter", 4), ("w_s", 6), ("σ_s mm", 14)]
        columns += [("w_a", 6), ("σ_a mm", 17), ("σ_I", 12), ("s", 6)]
        head = " ".join(f"{name:>{width}}" for name, width in columns) + "  note"
        lines = [head, "-" * len(head)]

        def fmt(values: Sequence[float]) -> str:
            return ",".join(f"{v:g}" for v in (values[:1] if len(set(values)) == 1 else values))

        for t in self.trials:
            p = t.params
            cells = [
                f"{t.index}{'*' if t.index == best else ' '}",
                f"{t.mean_dice:.4f}",
                str(p.iterations),
                f"{p.smoothness_weight:.3g}",
                fmt(p.smoothness_sigma_mm),
                f"{p.appearance_weight:.3g}",
                fmt(p.appearance_sigma_mm),
                fmt(p.intensity_sigma),
                f"{t.seconds:.1f}",
            ]
            row = " ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, columns))
            lines.append(f"{row}  {t.note}")
        lines.append(f"no CRF: mean Dice {float(np.mean(self.no_crf_dice)):.4f}")
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """JSON-serialisable summary of the search, stored beside the best parameters."""
        best = self.best
        return {
            "cases": self.case_ids,
            "trials": len(self.trials),
            "best_trial": best.index,
            "best_mean_dice": round(best.mean_dice, 5),
            "official_defaults_mean_dice": round(self.trials[0].mean_dice, 5),
            "no_crf_mean_dice": round(float(np.mean(self.no_crf_dice)), 5),
            "per_case_dice": dict(zip(self.case_ids, [round(d, 5) for d in best.dice])),
        }


def dice_score(labels: np.ndarray, reference: np.ndarray, n_classes: int) -> float:
    """Mean Dice over the foreground classes ``1..K-1`` (1.0 for a class absent from both)."""
    scores = []
    for k in range(1, n_classes):
        a, b = labels == k, reference == k
        total = int(a.sum()) + int(b.sum())
        scores.append(1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total)
    return float(np.mean(scores))


def evaluate(
    params: CRFParams, cases: Sequence[TuningCase], threads: int | None = None
) -> list[float]:
    """Dice of the CRF's labels on every case."""
    scores = []
    for case in cases:
        refined = dense_crf(case.probabilities, case.image, case.spacing, params, threads=threads)
        labels = np.argmax(refined, axis=0)
        scores.append(dice_score(labels, case.reference, case.probabilities.shape[0]))
    return scores


def random_search(
    cases: Sequence[TuningCase],
    trials: int = 30,
    seed: int = 0,
    space: SearchSpace | None = None,
    base: CRFParams | None = None,
    *,
    threads: int | None = None,
    progress: bool = False,
) -> TuningResult:
    """Search CRF parameters maximising the mean Dice over ``cases``.

    Args:
        cases: Validation cases (probabilities of a trained model and references).
        trials: Parameter sets to evaluate, including the two fixed ones (≥ 2).
        seed: Seed of the random draws.
        space: Ranges to draw from.
        base: Parameters of trial 0, and values of the fields not searched.
        threads: Threads for the CRF kernels.
        progress: Show a progress bar.

    Returns:
        Every trial with its per-case Dice; ``.best`` is the chosen one.

    Raises:
        LesionsegError: No cases, fewer than 2 trials, or inconsistent cases.
    """
    if not cases:
        raise LesionsegError("CRF tuning needs at least one case")
    if trials < 2:
        raise LesionsegError(f"--trials must be at least 2, got {trials}")
    space = space or SearchSpace()
    base = base or CRFParams()
    channels = {c.image.shape[0] for c in cases}
    classes = {c.probabilities.shape[0] for c in cases}
    if len(channels) != 1 or len(classes) != 1:
        raise LesionsegError("all tuning cases need the same number of channels and of classes")
    n_channels = channels.pop()
    rng = np.random.default_rng(seed)
    no_crf = [
        dice_score(np.argmax(c.probabilities, axis=0), c.reference, c.probabilities.shape[0])
        for c in cases
    ]
    candidates = [
        (base, "starting parameters"),
        (base.with_changes(smoothness_weight=0.0, appearance_weight=0.0), "CRF off"),
    ]
    candidates += [(space.sample(rng, base, n_channels), "") for _ in range(trials - 2)]
    done = []
    for index, (params, note) in enumerate(
        tqdm(candidates, desc="CRF trials", disable=not progress)
    ):
        start = time.perf_counter()
        scores = evaluate(params, cases, threads=threads)
        done.append(Trial(index, params, scores, time.perf_counter() - start, note))
    return TuningResult(done, no_crf, [c.id for c in cases])


def save_result(result: TuningResult, path: str | Path, overwrite: bool = True) -> None:
    """Write the best parameters (readable by :meth:`CRFParams.load`) with the search record."""
    result.best.params.save(path, extra={"tuning": result.record()}, overwrite=overwrite)


def _crop_box(image: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels of any channel, with a margin."""
    inside = np.any(image != 0, axis=0)
    if not inside.any():
        return tuple(slice(0, s) for s in inside.shape)
    box = []
    for axis in range(3):
        hit = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, hit[0] - margin), min(inside.shape[axis], hit[-1] + margin + 1)))
    return tuple(box)


def load_tuning_cases(
    prob_dir: str | Path,
    dataset: str | Path | None = None,
    image_dir: str | Path | None = None,
    ref_dir: str | Path | None = None,
    zscore: bool = True,
    margin: int = 8,
) -> list[TuningCase]:
    """Validation cases from files: probabilities, images and references matched by case id.

    Args:
        prob_dir: Folder of ``<case>_prob.nii.gz`` (or ``<case>.nii.gz``) probability maps.
        dataset: Data set (folder with dataset.json, or CSV manifest) giving each case's
            channels and label.
        image_dir: Instead of ``dataset``: folder of ``<case>_0000.nii.gz``,
            ``<case>_0001.nii.gz``, ... channel files.
        ref_dir: Folder of ``<case>.nii.gz`` references (required with ``image_dir``;
            overrides the data set's labels).
        zscore: Z-score images inside their non-zero voxels unless they already are.
        margin: Voxels kept around the non-zero image box (the CRF runs on that crop).

    Raises:
        LesionsegError: Missing folders or files, or inputs on different grids.
    """
    from lesionseg.data.nifti import load_nifti
    from lesionseg.postprocess.crf.cases import find_cases
    from lesionseg.postprocess.crf.io import load_channels, load_probabilities, zscore_channels

    found = find_cases(prob_dir, dataset, image_dir, ref_dir, need_reference=True)
    cases = []
    for case in found:
        case_id, path, channels, ref = case.id, case.probabilities, case.channels, case.reference
        probs, grid = load_probabilities(path)
        image, _ = load_channels(channels, grid)
        reference = load_nifti(ref, dtype=None)
        if not reference.grid.same_as(grid):
            raise LesionsegError("reference is on a different grid than the probabilities", ref)
        labels = np.rint(reference.data).astype(np.int64)
        if labels.min() < 0 or labels.max() >= probs.shape[0]:
            raise LesionsegError(
                f"reference labels must be 0..{probs.shape[0] - 1} for {probs.shape[0]} classes",
                ref,
            )
        if zscore:
            image = zscore_channels(image)
        box = _crop_box(image, margin)
        cases.append(
            TuningCase(
                case_id,
                np.ascontiguousarray(probs[(slice(None), *box)]),
                np.ascontiguousarray(image[(slice(None), *box)]),
                grid.spacing,
                np.ascontiguousarray(labels[box].astype(np.uint8)),
            )
        )
    return cases
