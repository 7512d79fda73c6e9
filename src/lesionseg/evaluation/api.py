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
from lesionseg.data.prediction_files import beside, is_beside_map
from lesionseg.errors import LesionsegError
from lesionseg.evaluation.groups import lesion_size_groups, mean_lesion_size
from lesionseg.evaluation.lesionwise import PRESETS, get_preset, lesion_metrics
from lesionseg.evaluation.messages import short_list
from lesionseg.evaluation.regions import (
    LabelCensus,
    present_labels,
    region_definitions,
    region_mask,
)
from lesionseg.evaluation.statistics import (
    PairedTest,
    global_dice_rows,
    metric_columns,
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
        splits: Case id → ``"train"`` or ``"test"`` when read from a data set, else empty.
    """

    files: dict[str, Path]
    label_names: dict[int, str] | None = None
    origin: str = ""
    splits: dict[str, str] = field(default_factory=dict)


def case_id(path: str | Path) -> str:
    """Case id of a label-map file: the name without ``.nii[.gz]`` and a trailing ``_seg``."""
    name = strip_nifti_suffix(Path(path).name)
    return re.sub(r"_seg$", "", name)


def find_cases(source: Source, role: str = "prediction") -> CaseFiles:
    """Find the label maps of a folder, a list of files or a data set.

    Args:
        source: A folder of ``<case>_seg.nii.gz`` / ``<case>.nii.gz`` files (the
            ``_prob``, ``_uncertainty`` and ``_members`` maps beside them are skipped),
            a data set (folder with ``dataset.json`` or a CSV/TSV manifest: its labelled
            subjects' label maps), one NIfTI file or a list of them.
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
            labelled = [s for s in dataset.subjects if s.label is not None]
            if not labelled:
                raise LesionsegError(f"data set has no label maps to use as {role}", path)
            names = {v: n for v, n in dataset.labels.items() if v > 0}
            files = {s.id: s.label for s in labelled}
            return CaseFiles(files, names, str(path), {s.id: s.split for s in labelled})
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and is_nifti_path(p)
                and not is_beside_map(strip_nifti_suffix(p.name))
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


# ----------------------------------------------------------------------------- pairing

#: How a reference case without a prediction of a method is treated (``missing=``).
MISSING_RULES = {
    "error": "refused: every reference case needs a prediction",
    "skip": "left out of every mean (--allow-missing)",
    "empty": "scored as empty predictions (--missing-as-empty)",
}
#: The ``prediction`` column of a case scored as an empty prediction.
MISSING_EMPTY = "missing: scored as empty"


def _check_pairing(name: str, found: CaseFiles, ref_cases: CaseFiles) -> None:
    """Refuse predictions without a reference, with a plain message when nothing pairs."""
    unpaired = sorted(set(found.files) - set(ref_cases.files))
    if not unpaired:
        return
    if len(unpaired) == len(found.files):
        raise LesionsegError(
            f"prediction set {name!r} ({found.origin}) and the reference ({ref_cases.origin}) "
            f"have no case in common: prediction cases {short_list(unpaired, 3)}; reference "
            f"cases {short_list(sorted(ref_cases.files), 3)}; files are paired by case id, "
            "the file name without .nii[.gz] and a trailing _seg"
        )
    raise LesionsegError(
        f"prediction set {name!r}: {len(unpaired)} case(s) without a reference in "
        f"{ref_cases.origin}: {short_list(unpaired)}"
    )


def _expected_cases(ref_cases: CaseFiles, pred_cases: Mapping[str, CaseFiles]) -> CaseFiles:
    """The reference cases that need a prediction.

    With a data set as reference, the labelled cases of the split(s) the predictions
    come from: ``lesionseg predict`` on a data set predicts its test split, and the
    training cases are then not missing predictions.
    """
    if not ref_cases.splits:
        return ref_cases
    predicted = set().union(*(f.files for f in pred_cases.values()))
    splits = {ref_cases.splits[c] for c in predicted if c in ref_cases.splits}
    if not splits or splits == set(ref_cases.splits.values()):
        return ref_cases
    keep = {c: path for c, path in ref_cases.files.items() if ref_cases.splits[c] in splits}
    return CaseFiles(
        keep,
        ref_cases.label_names,
        f"{ref_cases.origin} ({' and '.join(sorted(splits))} split)",
        {c: ref_cases.splits[c] for c in keep},
    )


def _refuse_missing(
    missing_ids: Mapping[str, list[str]],
    pred_cases: Mapping[str, CaseFiles],
    ref_cases: CaseFiles,
) -> None:
    """The default: a mean over fewer cases than the reference has is an error."""
    for name, ids in missing_ids.items():
        if ids:
            raise LesionsegError(
                f"prediction set {name!r} ({pred_cases[name].origin}): {len(ids)} of "
                f"{len(ref_cases.files)} reference cases have no prediction: {short_list(ids)}; "
                "pass --missing-as-empty to score them as empty predictions, or "
                "--allow-missing to leave them out of the means"
            )


def missing_lines(settings: Mapping) -> list[str]:
    """One line per prediction set with missing cases: how many, which, and how scored.

    Args:
        settings: :attr:`EvaluationResult.settings` (``missing_predictions``,
            ``reference_cases`` and ``missing_predictions_rule``).
    """
    total = settings.get("reference_cases")
    rule = settings.get("missing_predictions_rule")
    return [
        f"missing predictions: {len(ids)} of {total} reference cases for {method!r} "
        f"({short_list(ids)}); {rule}"
        for method, ids in settings.get("missing_predictions", {}).items()
        if ids
    ]


# ----------------------------------------------------------------------------- results


@dataclass
class EvaluationResult:
    """Per-case metrics of one or several methods, with what produced them.

    Attributes:
        rows: One dict per method, case and region: ``method``, ``case``,
            ``prediction`` (file name, or :data:`MISSING_EMPTY`), ``region``
            [, ``size_group``] and the metrics.
        methods: Method names in order.
        settings: Definitions used (HD95 variant, lesion-wise presets with their
            rules, empty-case rules, grids, missing predictions, label warnings),
            for the record and the output files.
    """

    rows: list[dict]
    methods: list[str]
    settings: dict = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """Problems a reader of the means must know about, one line each (for stderr)."""
        return missing_lines(self.settings) + list(self.settings.get("label_warnings", []))

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
        if self.rows and metric not in metric_columns(self.rows):
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


@dataclass
class _Scoring:
    """How every case is scored, and the labels the scoring has seen so far."""

    labels: list[int] | None
    regions: str | Mapping[str, Iterable[int]] | None
    label_names: Mapping[int, str] | None
    options: dict
    census: LabelCensus = field(default_factory=LabelCensus)
    seen_labels: set[int] = field(default_factory=set)

    def record(self, group: str, path: Path | None, label_map: np.ndarray) -> None:
        """Note the values of a file, to check the region scheme against them."""
        if self.regions is not None and path is not None:  # only a scheme can be wrong
            self.census.add(group, path, label_map)

    def rows(self, method: str, case: str, pred: np.ndarray, ref: Volume) -> list[dict]:
        """The rows of one method's prediction of one case."""
        labels = self.labels
        if labels is None and self.regions is None:
            labels = present_labels(pred, ref.data)
            self.seen_labels.update(labels)
        if not labels and self.regions is None:
            return []  # both maps empty: filled in later with the labels of other cases
        rows = evaluate_case(
            pred,
            ref.data,
            ref.grid.spacing,
            labels=labels,
            regions=self.regions,
            label_names=self.label_names,
            **self.options,
        )
        return [{"method": method, "case": case, **row} for row in rows]

    def mean_lesion_sizes(self, ref: np.ndarray) -> dict[str, float]:
        """Mean reference lesion size of each region of one case (EDD groups)."""
        labels = self.labels
        if labels is None and self.regions is None:
            labels = present_labels(ref) or [1]
        definitions = region_definitions(labels, self.regions, self.label_names)
        return {name: mean_lesion_size(region_mask(ref, v)) for name, v in definitions.items()}


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
    missing: str = "error",
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate prediction sets against references read from disk.

    Args:
        predictions: One prediction source (a folder, files) or a mapping
            method name → source for several methods.
        reference: A folder of label maps, a list of files, or a data set
            (folder with ``dataset.json`` or a CSV manifest; its labelled cases of the
            split(s) the predictions come from).
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
        missing: A reference case without a prediction of some method is refused
            (``"error"``, the default, as nnU-Net's evaluation without ``--chill``),
            left out of that method's means (``"skip"``), or scored as an empty,
            all-background prediction (``"empty"``). Either way the cases are listed in
            ``settings["missing_predictions"]`` and :attr:`EvaluationResult.warnings`.
        progress: Show a progress bar.

    Raises:
        LesionsegError: Missing or unreadable files, a prediction without reference,
            a reference without prediction (with ``missing="error"``), mismatched grids
            (without ``resample``), unknown preset or HD95 definition.
    """
    if hd95 not in HD95_VARIANTS:
        raise LesionsegError(
            f"--hd95: unknown definition {hd95!r} (known: {', '.join(HD95_VARIANTS)})"
        )
    if missing not in MISSING_RULES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_RULES)}, got {missing!r}")
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
        _check_pairing(name, found, ref_cases)
    ref_cases = _expected_cases(ref_cases, pred_cases)
    missing_ids = {
        name: sorted(set(ref_cases.files) - set(found.files)) for name, found in pred_cases.items()
    }
    if missing == "error":
        _refuse_missing(missing_ids, pred_cases, ref_cases)
    scored = {
        name: set(ref_cases.files) if missing == "empty" else set(found.files)
        for name, found in pred_cases.items()
    }
    cases = sorted(set().union(*scored.values()))
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
    scoring = _Scoring(fixed_labels, regions, label_names, options)

    from tqdm import tqdm

    rows: list[dict] = []
    grids: dict[str, dict] = {}
    mean_sizes: dict[str, dict[str, float]] = {}
    total = sum(len(s) for s in scored.values())
    with tqdm(total=total, desc="evaluate", unit="case", disable=not progress) as bar:
        for case in cases:
            ref = load_label_map(ref_cases.files[case])
            scoring.record("reference", ref.path, ref.data)
            grids[case] = {"shape": list(ref.grid.shape), "spacing_mm": list(ref.grid.spacing)}
            for method, found in pred_cases.items():
                if case not in scored[method]:
                    continue
                pred_data = _prediction_array(found.files.get(case), ref, resample)
                scoring.record(f"prediction set {method!r}", found.files.get(case), pred_data)
                new = scoring.rows(method, case, pred_data, ref)
                _add_retention(new, found.files.get(case), pred_data, ref, scoring)
                rows += new
                bar.update(1)
            if size_groups:
                for name, size in scoring.mean_lesion_sizes(ref.data).items():
                    mean_sizes.setdefault(name, {})[case] = size
    if fixed_labels is None and regions is None:
        rows = _fill_absent_labels(
            rows, scoring.seen_labels or {1}, label_names, grids, options, scored
        )
    group_thresholds = _add_size_groups(rows, mean_sizes) if size_groups else {}
    settings = {
        "reference": ref_cases.origin,
        "predictions": {name: f.origin for name, f in pred_cases.items()},
        "cases": len(cases),
        "reference_cases": len(ref_cases.files),
        "reference_cases_without_prediction": len(set().union(*map(set, missing_ids.values()))),
        "missing_predictions": missing_ids,
        "missing_policy": missing,
        "missing_predictions_rule": MISSING_RULES[missing],
        "label_warnings": scoring.census.scheme_warnings(regions),
        "regions": regions if isinstance(regions, str) or regions is None else dict(regions),
        "labels": fixed_labels if fixed_labels is not None else sorted(scoring.seen_labels),
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
    return EvaluationResult(_with_prediction_column(rows, pred_cases), list(sources), settings)


def uncertainty_file(prediction: Path | None) -> Path | None:
    """The ``--save-uncertainty`` maps written beside a prediction, if there are any."""
    if prediction is None:
        return None
    path = beside(prediction.parent, case_id(prediction), "uncertainty")
    return path if path.is_file() else None


def _add_retention(
    rows: list[dict], prediction: Path | None, pred: np.ndarray, ref: Volume, scoring: _Scoring
) -> None:
    """Add ``r_aac`` (Shifts' area above the nDSC retention curve) when uncertainty exists.

    The voxels are retained from most to least certain by the entropy of the mean
    prediction (the first map of ``<case>_uncertainty.nii.gz``), over the whole image as
    Shifts scores it.

    Raises:
        LesionsegError: Uncertainty maps on another grid than the reference.
    """
    path = uncertainty_file(prediction)
    if path is None or not rows:
        return
    from lesionseg.evaluation.retention import retention_area

    entropy = load_nifti(path, volume=0)
    if tuple(entropy.grid.shape) != tuple(ref.grid.shape) or not entropy.grid.same_as(ref.grid):
        raise LesionsegError("uncertainty maps not on the reference grid", path)
    labels = scoring.labels
    if labels is None and scoring.regions is None:
        labels = present_labels(pred, ref.data) or [1]
    definitions = region_definitions(labels, scoring.regions, scoring.label_names)
    for row in rows:
        values = definitions.get(row["region"])
        if values is not None:
            row["r_aac"] = retention_area(
                region_mask(ref.data, values), region_mask(pred, values), entropy.data
            )


def _prediction_array(path: Path | None, ref: Volume, resample: bool) -> np.ndarray:
    """A prediction on the reference grid; no file (``missing="empty"``): all background."""
    if path is None:
        return np.zeros_like(ref.data)
    return on_reference_grid(load_label_map(path), ref, resample)


def _with_prediction_column(rows: list[dict], pred_cases: Mapping[str, CaseFiles]) -> list[dict]:
    """Each row with the prediction it scored beside the case, so empty stand-ins show."""
    out = []
    for row in rows:
        path = pred_cases[row["method"]].files.get(row["case"])
        head = {"method": row["method"], "case": row["case"]}
        head["prediction"] = path.name if path is not None else MISSING_EMPTY
        out.append({**head, **row})
    return out


def _add_size_groups(rows: list[dict], mean_sizes: Mapping[str, Mapping[str, float]]) -> dict:
    """Add each row's EDD size group; returns the threshold of each region."""
    groups, thresholds = {}, {}
    for region, sizes in mean_sizes.items():
        groups[region], thresholds[region] = lesion_size_groups(sizes)
    for row in rows:
        # a region absent from a case's reference has no lesion there: group "none"
        row["size_group"] = groups.get(row["region"], {}).get(row["case"], "none")
        row["ref_mean_lesion_vox"] = mean_sizes.get(row["region"], {}).get(row["case"], math.nan)
    return thresholds


def _fill_absent_labels(
    rows: list[dict],
    all_labels: Iterable[int],
    label_names: Mapping[int, str] | None,
    grids: Mapping[str, dict],
    options: dict,
    scored: Mapping[str, set[str]],
) -> list[dict]:
    """Add rows for labels absent from both maps of a case (both empty: fixed values)."""
    definitions = region_definitions(sorted(all_labels), None, label_names)
    have = {(r["method"], r["case"], r["region"]) for r in rows}
    out = list(rows)
    empty = np.zeros((1, 1, 1), dtype=bool)
    for method, cases in scored.items():
        for case in sorted(cases):
            for name in definitions:
                if (method, case, name) not in have:
                    metrics = evaluate_masks(empty, empty, grids[case]["spacing_mm"], **options)
                    out.append({"method": method, "case": case, "region": name, **metrics})
    order = {name: i for i, name in enumerate(definitions)}
    methods = list(scored)
    out.sort(
        key=lambda r: (
            methods.index(r["method"]),
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
    "MISSING_EMPTY",
    "MISSING_RULES",
    "EvaluationResult",
    "evaluate",
    "evaluate_case",
    "evaluate_masks",
    "find_cases",
    "load_label_map",
    "missing_lines",
    "preset_prefix",
    "resample_nearest",
]
