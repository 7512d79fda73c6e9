"""Python API of the evaluation: arrays in, metrics out; or folders in, tables out.

* :func:`evaluate_masks` — every metric of one binary prediction/reference pair.
* :func:`evaluate_case` — one case's label maps, per label and per merged region.
* :func:`evaluate` — one or several prediction sets against references read from
  a folder, a list of files or a data set, returning an :class:`EvaluationResult`
  (per-case rows, summaries, global Dice, paired tests).

Empty masks never crash and never put a silent NaN into a mean: see
``docs/metrics.md`` for the value of each metric when one or both masks are empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from lesionseg.data.dataset import load_dataset
from lesionseg.data.nifti import Grid, Volume, is_nifti_path, load_nifti, strip_nifti_suffix
from lesionseg.errors import LesionsegError
from lesionseg.evaluation.groups import lesion_size_groups, mean_lesion_size
from lesionseg.evaluation.lesionwise import PRESETS, get_preset, lesion_metrics
from lesionseg.evaluation.regions import present_labels, region_definitions, region_mask
from lesionseg.evaluation.statistics import (
    PairedTest,
    global_dice_rows,
    paired_test_rows,
    summary_rows,
)
from lesionseg.evaluation.surface import HD95_VARIANTS, surface_metrics
from lesionseg.evaluation.voxel import voxel_metrics

DEFAULT_PRESETS = ("isles22",)
Source = str | Path | Sequence[str | Path]

HD95_DEFINITIONS = {
    "monai": "MONAI 1.6: larger of the two directed 95th percentiles of voxel-surface distances",
    "medpy": "MedPy 0.5: 95th percentile of both directions' voxel-surface distances pooled",
    "deepmind": "DeepMind surface-distance (BraTS tools): larger of the two directed "
    "area-weighted 95th percentiles on voxel-corner surfaces",
}


def preset_prefix(name: str) -> str:
    """Column prefix of a preset's metrics (``brats2023-glioma`` → ``brats2023_glioma``)."""
    return name.replace("-", "_")


def evaluate_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float,
    *,
    presets: Iterable[str] = DEFAULT_PRESETS,
    hd95: str | Sequence[str] = "monai",
    surface: bool = True,
    empty_distance: float = math.nan,
    connectivity: int | None = None,
) -> dict[str, float]:
    """Every metric of one binary prediction against its reference.

    Args:
        pred: Predicted 3D mask (non-zero is lesion).
        ref: Reference 3D mask, same shape.
        spacing: Voxel size in mm along each array axis.
        presets: Lesion-wise presets to apply (see ``PRESETS.names()``); may be empty.
        hd95: HD95 definition(s): ``"monai"``, ``"medpy"``, ``"deepmind"``.
        surface: Compute the surface distances (the slowest part).
        empty_distance: Distance value when exactly one mask is empty (NaN by default).
        connectivity: Override of the presets' connectivity (6, 18 or 26).

    Returns:
        Metric name → value: voxel metrics, ``hd_mm``/``hd95_<variant>_mm``/``assd_mm``,
        and ``<preset>_<metric>`` for each lesion-wise preset.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (pred.ndim,)))
    out: dict[str, float] = voxel_metrics(pred, ref, float(np.prod(spacing)) / 1000.0)
    if surface:
        out.update(surface_metrics(pred, ref, spacing, hd95=hd95, empty_distance=empty_distance))
    for name in presets:
        result = lesion_metrics(pred, ref, spacing, name, connectivity=connectivity)
        prefix = preset_prefix(result.preset.name)
        out.update({f"{prefix}_{k}": v for k, v in result.values().items()})
    return out


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float,
    *,
    labels: Iterable[int] | None = None,
    regions: str | Mapping[str, Iterable[int]] | None = None,
    label_names: Mapping[int, str] | None = None,
    **options,
) -> list[dict]:
    """Metrics of one case's label maps, one row per label and merged region.

    Args:
        pred: Predicted label map (integers; 0 is background).
        ref: Reference label map of the same shape.
        spacing: Voxel size in mm along each array axis.
        labels: Label values to evaluate one by one. Default: every non-zero value
            present in either map (label 1 if both are empty), unless ``regions`` is given.
        regions: ``"brats"``, ``"brats2023"`` or a mapping name → label values.
        label_names: Names of label values, used as region names.
        **options: Passed to :func:`evaluate_masks` (presets, hd95, surface, ...).

    Returns:
        One dict per region with ``region`` and the metrics.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    if labels is None and regions is None:
        labels = present_labels(pred, ref) or [1]
    definitions = region_definitions(labels, regions, label_names)
    rows = []
    for name, values in definitions.items():
        metrics = evaluate_masks(
            region_mask(pred, values), region_mask(ref, values), spacing, **options
        )
        rows.append({"region": name, **metrics})
    return rows


# ----------------------------------------------------------------------------- files


@dataclass
class CaseFiles:
    """Label-map files of a set of cases.

    Attributes:
        files: Case id → file.
        label_names: Label value → name when read from a data set, else None.
        origin: Where the files came from, for messages.
    """

    files: dict[str, Path]
    label_names: dict[int, str] | None = None
    origin: str = ""


_SKIP_SUFFIXES = ("_prob",)


def case_id(path: str | Path) -> str:
    """Case id of a label-map file: the name without ``.nii[.gz]`` and a trailing ``_seg``."""
    name = strip_nifti_suffix(Path(path).name)
    return re.sub(r"_seg$", "", name)


def find_cases(source: Source, role: str = "prediction") -> CaseFiles:
    """Find the label maps of a folder, a list of files or a data set.

    Args:
        source: A folder of ``<case>_seg.nii.gz`` / ``<case>.nii.gz`` files (``_prob``
            maps are skipped), a data set (folder with ``dataset.json`` or a CSV/TSV
            manifest: its labelled subjects' label maps), one NIfTI file or a list of them.
        role: ``"prediction"`` or ``"reference"``, for messages.

    Raises:
        LesionsegError: Nothing found, a missing file, or two files for one case.
    """
    items = [source] if isinstance(source, str | Path) else list(source)
    if not items:
        raise LesionsegError(f"no {role} given")
    if len(items) == 1:
        path = Path(items[0])
        is_dataset = (path.is_dir() and (path / "dataset.json").is_file()) or (
            path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".tab")
        )
        if is_dataset:
            dataset = load_dataset(path)
            files = {s.id: s.label for s in dataset.subjects if s.label is not None}
            if not files:
                raise LesionsegError(f"data set has no label maps to use as {role}", path)
            names = {v: n for v, n in dataset.labels.items() if v > 0}
            return CaseFiles(files, names, str(path))
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and is_nifti_path(p)
                and not strip_nifti_suffix(p.name).endswith(_SKIP_SUFFIXES)
            )
            if not found:
                raise LesionsegError(
                    f"no NIfTI {role} files (.nii or .nii.gz) in this folder", path
                )
            return CaseFiles(_by_case(found, role), None, str(path))
        if not path.exists():
            raise LesionsegError(f"{role} not found", path)
    paths = [Path(p) for p in items]
    for p in paths:
        if not p.is_file():
            raise LesionsegError(f"{role} file not found", p)
        if not is_nifti_path(p):
            raise LesionsegError(f"{role} is not a NIfTI file (.nii or .nii.gz)", p)
    return CaseFiles(_by_case(paths, role), None, ", ".join(str(p) for p in paths[:3]))


def _by_case(paths: Iterable[Path], role: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in paths:
        cid = case_id(p)
        if cid in files:
            raise LesionsegError(
                f"two {role} files for case {cid!r}: {files[cid].name} and {p.name}", p.parent
            )
        files[cid] = p
    return files


def load_label_map(path: str | Path) -> Volume:
    """Load a NIfTI label map as integers.

    Raises:
        LesionsegError: Unreadable file, or values that are not whole numbers.
    """
    volume = load_nifti(path, dtype=None)
    data = np.asarray(volume.data)
    if not np.issubdtype(data.dtype, np.integer):
        if np.issubdtype(data.dtype, np.bool_):
            data = data.astype(np.uint8)
        else:
            rounded = np.rint(data)
            if not np.array_equal(rounded, data):
                raise LesionsegError(
                    "not a label map: it has non-integer values (a probability map? "
                    "threshold it first)",
                    path,
                )
            data = rounded
    if data.min() < 0:
        raise LesionsegError("label map has negative values", path)
    return Volume(data.astype(np.int32, copy=False), volume.grid, volume.path)


def resample_nearest(data: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """Nearest-neighbour resampling of a label map from ``source`` onto ``target`` (by affines)."""
    voxel_map = np.linalg.inv(source.affine) @ target.affine  # target voxel → source voxel
    return ndimage.affine_transform(
        data,
        voxel_map[:3, :3],
        offset=voxel_map[:3, 3],
        output_shape=tuple(target.shape),
        order=0,
        mode="constant",
        cval=0,
    )


def on_reference_grid(pred: Volume, ref: Volume, resample: bool) -> np.ndarray:
    """The prediction's array on the reference grid.

    Raises:
        LesionsegError: The grids differ and ``resample`` is False.
    """
    if pred.grid.same_as(ref.grid):
        return pred.data
    if not resample:
        sp_p = "x".join(f"{s:.3g}" for s in pred.grid.spacing)
        sp_r = "x".join(f"{s:.3g}" for s in ref.grid.spacing)
        raise LesionsegError(
            f"prediction grid (shape {tuple(pred.grid.shape)}, spacing {sp_p} mm, "
            f"{pred.grid.orientation}) differs from the reference grid {ref.path} (shape "
            f"{tuple(ref.grid.shape)}, spacing {sp_r} mm, {ref.grid.orientation}); "
            "pass --resample to resample the prediction onto it (nearest neighbour)",
            pred.path,
        )
    return resample_nearest(pred.data, pred.grid, ref.grid)


# ----------------------------------------------------------------------------- results


@dataclass
class EvaluationResult:
    """Per-case metrics of one or several methods, with what produced them.

    Attributes:
        rows: One dict per method, case and region: ``method``, ``case``,
            ``region`` [, ``size_group``] and the metrics.
        methods: Method names in order.
        settings: Definitions used (HD95 variant, lesion-wise presets with their
            rules, empty-case rules, grids), for the record and the output files.
    """

    rows: list[dict]
    methods: list[str]
    settings: dict = field(default_factory=dict)

    def summary(
        self, keys: Sequence[str] = ("method", "region"), metrics: Sequence[str] | None = None
    ) -> list[dict]:
        """Mean, SD, median and count per group and metric (see :func:`summary_rows`)."""
        return summary_rows(self.rows, keys, metrics)

    def global_dice(self) -> list[dict]:
        """Dice pooled over all cases, per method and region."""
        return global_dice_rows(self.rows)

    def compare(
        self, method_a: str, method_b: str, metric: str = "dice"
    ) -> list[tuple[str, PairedTest]]:
        """Paired t-test and Wilcoxon test of ``metric`` between two methods, per region.

        Raises:
            LesionsegError: Unknown method or metric.
        """
        for m in (method_a, method_b):
            if m not in self.methods:
                raise LesionsegError(
                    f"--compare: no method {m!r} (methods: {', '.join(self.methods)})"
                )
        if self.rows and metric not in self.rows[0]:
            raise LesionsegError(f"--compare-metric: no metric {metric!r} in the results")
        return paired_test_rows(self.rows, method_a, method_b, metric)

    def to_dataframe(self):
        """The per-case rows as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def _method_name(source: Source, index: int) -> str:
    if isinstance(source, str | Path) and Path(source).is_dir():
        return Path(source).resolve().name
    return "prediction" if index == 0 else f"prediction{index + 1}"


def evaluate(
    predictions: Source | Mapping[str, Source],
    reference: Source,
    *,
    labels: Iterable[int] | None = None,
    regions: str | Mapping[str, Iterable[int]] | None = None,
    presets: Iterable[str] = DEFAULT_PRESETS,
    hd95: str = "monai",
    surface: bool = True,
    empty_distance: float = math.nan,
    connectivity: int | None = None,
    resample: bool = False,
    size_groups: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate prediction sets against references read from disk.

    Args:
        predictions: One prediction source (a folder, files) or a mapping
            method name → source for several methods.
        reference: A folder of label maps, a list of files, or a data set
            (folder with ``dataset.json`` or a CSV manifest).
        labels: Label values to evaluate one by one; default: the data set's labels,
            or every non-zero value found in any case (label 1 if none).
        regions: Merged regions (``"brats"``, ``"brats2023"`` or a mapping).
        presets: Lesion-wise presets (see ``PRESETS.names()``).
        hd95: HD95 definition: ``"monai"`` (default), ``"medpy"`` or ``"deepmind"``.
        surface: Compute surface distances.
        empty_distance: Distance value when exactly one mask is empty (default NaN,
            which is then left out of means; 374 reproduces the BraTS tools).
        connectivity: Override of the presets' connectivity (6, 18 or 26).
        resample: Resample predictions on another grid onto the reference grid
            (nearest neighbour) instead of refusing them.
        size_groups: Add the EDD small/large lesion group of each case (per region).
        progress: Show a progress bar.

    Raises:
        LesionsegError: Missing or unreadable files, a prediction without reference,
            mismatched grids (without ``resample``), unknown preset or HD95 definition.
    """
    if hd95 not in HD95_VARIANTS:
        raise LesionsegError(
            f"--hd95: unknown definition {hd95!r} (known: {', '.join(HD95_VARIANTS)})"
        )
    presets = tuple(presets)
    preset_objects = [get_preset(p, connectivity) for p in presets]
    if isinstance(predictions, Mapping):
        sources = dict(predictions)
    else:
        sources = {_method_name(predictions, 0): predictions}
    if not sources:
        raise LesionsegError("no predictions given")
    ref_cases = find_cases(reference, "reference")
    pred_cases = {name: find_cases(src, "prediction") for name, src in sources.items()}
    for name, found in pred_cases.items():
        missing = sorted(set(found.files) - set(ref_cases.files))
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise LesionsegError(
                f"prediction set {name!r}: {len(missing)} case(s) without a reference in "
                f"{ref_cases.origin}: {shown}"
            )
    cases = sorted(set().union(*(set(f.files) for f in pred_cases.values())))
    label_names = ref_cases.label_names
    fixed_labels = list(labels) if labels is not None else None
    if fixed_labels is None and regions is None and label_names:
        fixed_labels = sorted(label_names)
    options = dict(
        presets=presets,
        hd95=hd95,
        surface=surface,
        empty_distance=empty_distance,
        connectivity=connectivity,
    )

    from tqdm import tqdm

    rows: list[dict] = []
    seen_labels: set[int] = set()
    grids: dict[str, dict] = {}
    mean_sizes: dict[str, dict[str, float]] = {}
    total = sum(len(f.files) for f in pred_cases.values())
    with tqdm(total=total, desc="evaluate", unit="case", disable=not progress) as bar:
        for case in cases:
            ref = load_label_map(ref_cases.files[case])
            spacing = ref.grid.spacing
            grids[case] = {"shape": list(ref.grid.shape), "spacing_mm": list(spacing)}
            for method, found in pred_cases.items():
                if case not in found.files:
                    continue
                pred = load_label_map(found.files[case])
                pred_data = on_reference_grid(pred, ref, resample)
                case_labels = fixed_labels
                if case_labels is None and regions is None:
                    case_labels = present_labels(pred_data, ref.data)
                    seen_labels.update(case_labels)
                if case_labels or regions is not None:
                    for row in evaluate_case(
                        pred_data,
                        ref.data,
                        spacing,
                        labels=case_labels,
                        regions=regions,
                        label_names=label_names,
                        **options,
                    ):
                        rows.append({"method": method, "case": case, **row})
                bar.update(1)
            if size_groups:
                definitions = region_definitions(
                    fixed_labels
                    if fixed_labels is not None or regions is not None
                    else present_labels(ref.data) or [1],
                    regions,
                    label_names,
                )
                for name, values in definitions.items():
                    mean_sizes.setdefault(name, {})[case] = mean_lesion_size(
                        region_mask(ref.data, values)
                    )
    if fixed_labels is None and regions is None:
        rows = _fill_absent_labels(
            rows, seen_labels or {1}, label_names, grids, options, pred_cases
        )
    group_thresholds = {}
    if size_groups:
        # a region absent from a case's reference has no lesion there: group "none"
        groups = {}
        for region, sizes in mean_sizes.items():
            groups[region], group_thresholds[region] = lesion_size_groups(sizes)
        for row in rows:
            row["size_group"] = groups.get(row["region"], {}).get(row["case"], "none")
            row["ref_mean_lesion_vox"] = mean_sizes.get(row["region"], {}).get(
                row["case"], math.nan
            )
    settings = {
        "reference": ref_cases.origin,
        "predictions": {name: f.origin for name, f in pred_cases.items()},
        "cases": len(cases),
        "reference_cases_without_prediction": len(set(ref_cases.files) - set(cases)),
        "regions": regions if isinstance(regions, str) or regions is None else dict(regions),
        "labels": fixed_labels if fixed_labels is not None else sorted(seen_labels),
        "hd95": hd95,
        "hd95_definition": HD95_DEFINITIONS[hd95] if surface else None,
        "surface": "voxel surfaces: foreground voxels with a background 6-neighbour; Euclidean "
        "distances between voxel centres in mm"
        if surface
        else None,
        "empty_rules": empty_rules(empty_distance),
        "lesion_presets": [p.describe() for p in preset_objects],
        "size_group_thresholds_vox": group_thresholds or None,
        "resample": resample,
    }
    return EvaluationResult(rows, list(sources), settings)


def _fill_absent_labels(rows, all_labels, label_names, grids, options, pred_cases):
    """Add rows for labels absent from both maps of a case (both empty: fixed values)."""
    definitions = region_definitions(sorted(all_labels), None, label_names)
    have = {(r["method"], r["case"], r["region"]) for r in rows}
    out = list(rows)
    empty = np.zeros((1, 1, 1), dtype=bool)
    for method, found in pred_cases.items():
        for case in sorted(found.files):
            for name in definitions:
                if (method, case, name) not in have:
                    metrics = evaluate_masks(empty, empty, grids[case]["spacing_mm"], **options)
                    out.append({"method": method, "case": case, "region": name, **metrics})
    order = {name: i for i, name in enumerate(definitions)}
    out.sort(
        key=lambda r: (
            list(pred_cases).index(r["method"]),
            r["case"],
            order.get(r["region"], len(order)),
        )
    )
    return out


def empty_rules(empty_distance: float = math.nan) -> dict[str, str]:
    """The value of each metric family when one or both masks are empty."""
    dist = (
        "NaN (undefined; left out of means, counted in n)"
        if math.isnan(empty_distance)
        else f"{empty_distance:g} mm"
    )
    return {
        "voxel": "both empty: Dice, precision, sensitivity, specificity = 1 (ISLES'22/BraTS); "
        "a ratio over an empty mask while the other is not: 0 (BraTS eps convention)",
        "surface": f"both empty: every distance 0 (BraTS); exactly one empty: {dist}",
        "lesion": "per preset, see lesion_presets[].empty_rule",
    }


__all__ = [
    "DEFAULT_PRESETS",
    "PRESETS",
    "CaseFiles",
    "EvaluationResult",
    "evaluate",
    "evaluate_case",
    "evaluate_masks",
    "find_cases",
    "load_label_map",
    "preset_prefix",
    "resample_nearest",
]
