"""``lesionseg report``: lesion tables, locations and pages for a folder of predictions.

For each case of a prediction folder (``<case>_seg.nii.gz``, or nnU-Net's
``<case>.nii.gz``) the report reads what ``lesionseg predict`` left beside it (the
probabilities ``<case>_prob.nii.gz``, the uncertainty maps ``<case>_uncertainty.nii.gz``
and members ``<case>_members.nii.gz`` of ``--save-uncertainty``) and, when the subject's
images are given, registers the chosen channel to the ICBM152 template for the location
classes and shows it on the page. It writes, in the report folder::

    <case>_lesions.csv   <case>_lesions.json   <case>.html
    lesions.csv (every case's lesions)   summary.csv   summary.json   index.html

Everything is computed in the canonical (RAS) orientation of the segmentation's grid,
so centroids are in the segmentation file's own world millimetres.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lesionseg.data.atomic import write_json_atomic, write_text_atomic
from lesionseg.data.dataset import Subject
from lesionseg.data.nifti import Grid, load_nifti, to_canonical
from lesionseg.data.prediction_files import (
    BESIDE,
    FILE_ENDING,
    beside,
    is_beside_map,
    segmentation_case,
)
from lesionseg.errors import LesionsegError
from lesionseg.report.lesions import COLUMNS, CaseTable, lesion_table

REPORT_KIND = "report"
#: Files the report writes, as glob patterns (what ``--overwrite`` may replace).
OWNED = (
    "*_lesions.csv",
    "*_lesions.json",
    "*.html",
    "lesions.csv",
    "summary.csv",
    "summary.json",
)
#: Channels registered to the T1 template, in order of preference.
REGISTRATION_CHANNELS = ("T1", "T1w", "FLAIR", "T2", "T2w")
REGISTRATIONS = ("bspline", "affine", "none")


@dataclass
class ReportSettings:
    """How lesions are counted and located.

    Attributes:
        connectivity: Lesion connectivity (6, 18 or 26).
        min_size_voxels: Smallest lesion counted.
        lesion_labels: Label values counted as lesion (None: every value > 0).
        registration: ``"bspline"`` (affine, then B-spline), ``"affine"`` or ``"none"``
            (no location classes).
        channel: The channel shown (None: the registered one).
        register_channel: The channel registered to the T1 template (None: the first of
            :data:`REGISTRATION_CHANNELS` the subject has, else its first channel).
        viewer: Embed the interactive viewer in the pages.
        largest: Lesions pictured per page.
        seed: Seed of the registration's metric sampling.
    """

    connectivity: int = 26
    min_size_voxels: int = 1
    lesion_labels: tuple[int, ...] | None = None
    registration: str = "bspline"
    channel: str | None = None
    register_channel: str | None = None
    viewer: bool = True
    largest: int = 5
    seed: int = 0


@dataclass
class PredictionFiles:
    """What ``lesionseg predict`` wrote for one case."""

    case: str
    segmentation: Path
    probabilities: Path | None = None
    uncertainty: Path | None = None
    members: Path | None = None

    def as_dict(self) -> dict[str, str]:
        """Role → file, for the table's ``files``."""
        roles = ("segmentation", "probabilities", "uncertainty", "members")
        return {r: str(getattr(self, r)) for r in roles if getattr(self, r) is not None}


def find_predictions(folder: str | Path) -> list[PredictionFiles]:
    """The cases of a prediction folder, with the maps written beside each.

    Raises:
        LesionsegError: Not a folder, or no segmentation in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LesionsegError("not a folder of predictions", folder)
    found = []
    for path in sorted(folder.glob(f"*{FILE_ENDING}")):
        stem = path.name[: -len(FILE_ENDING)]
        if is_beside_map(stem):
            continue
        case = segmentation_case(stem)  # <case>_seg, or nnU-Net's <case>
        files = PredictionFiles(case, path)
        for role in BESIDE:
            candidate = beside(folder, case, role)
            if candidate.is_file():
                setattr(files, role, candidate)
        found.append(files)
    if not found:
        raise LesionsegError("no <case>_seg.nii.gz or <case>.nii.gz in this folder", folder)
    return found


def _canonical(path: Path, volume: int | None = None, dtype=np.float32) -> tuple[np.ndarray, Grid]:
    loaded, _ = to_canonical(load_nifti(path, dtype=dtype, volume=volume))
    return loaded.data, loaded.grid


def _canonical_4d(path: Path, grid: Grid) -> np.ndarray:
    """A 4D map of the case (volumes last) in the canonical orientation of ``grid``.

    Raises:
        LesionsegError: Not on the segmentation's grid.
    """
    import nibabel as nib

    image = nib.load(str(path))
    if image.ndim == 3:
        data, got = _canonical(path)
        volumes = [data]
    else:
        volumes = []
        for v in range(image.shape[3]):
            data, got = _canonical(path, volume=v)
            volumes.append(data)
    if not got.same_as(grid):
        raise LesionsegError("is not on the grid of the segmentation it belongs to", path)
    return np.stack(volumes, axis=-1)


def _channel(subject: Subject, wanted: str | None, option: str = "--register-channel") -> str:
    if wanted is not None:
        if wanted not in subject.channels:
            known = ", ".join(subject.channels)
            raise LesionsegError(
                f"{option} {wanted}: subject {subject.id!r} has no such channel ({known})"
            )
        return wanted
    for name in REGISTRATION_CHANNELS:
        if name in subject.channels:
            return name
    return next(iter(subject.channels))


def _subject_image(
    subject: Subject, channel: str, grid: Grid, files: PredictionFiles
) -> np.ndarray:
    """One channel of the subject, canonical, checked to lie on the segmentation's grid.

    Raises:
        LesionsegError: The channel is on another grid.
    """
    path = subject.channels[channel]
    image, image_grid = _canonical(path, volume=subject.volumes.get(channel))
    if not image_grid.same_as(grid):
        raise LesionsegError(
            f"channel {channel} of subject {subject.id!r} is not on the grid of its "
            f"segmentation {files.segmentation}",
            path,
        )
    return image


@dataclass
class CaseReport:
    """One case's table with the arrays its page is drawn from.

    Attributes:
        table: The lesion table.
        numbered: The numbered lesion map it describes (canonical orientation).
        affine: Voxel-to-world matrix of that map.
        image: The channel shown, on the same grid, or None (no images given).
        channel: Its name.
        probabilities: The lesion probability map, or None.
    """

    table: CaseTable
    numbered: np.ndarray
    affine: np.ndarray
    image: np.ndarray | None = None
    channel: str | None = None
    probabilities: np.ndarray | None = None


def _prediction_maps(files: PredictionFiles, grid: Grid, settings: ReportSettings) -> dict:
    """The lesion probability, uncertainty maps and member masks written beside a case."""
    maps: dict = {"probabilities": None, "uncertainty": None, "member_masks": None}
    if files.probabilities is not None:
        probs = _canonical_4d(files.probabilities, grid)
        if probs.shape[-1] > 1:  # the lesion classes' probabilities summed
            keep = settings.lesion_labels or range(1, probs.shape[-1])
            maps["probabilities"] = probs[..., [k for k in keep if k < probs.shape[-1]]].sum(-1)
        else:
            maps["probabilities"] = probs[..., 0]
    if files.uncertainty is not None:
        from lesionseg.inference.uncertainty import UNCERTAINTY_MAPS

        stacked = _canonical_4d(files.uncertainty, grid)
        maps["uncertainty"] = {name: stacked[..., i] for i, name in enumerate(UNCERTAINTY_MAPS)}
    if files.members is not None:
        labels = _canonical_4d(files.members, grid)
        keep = settings.lesion_labels
        lesion = labels > 0 if keep is None else np.isin(labels, keep)
        maps["member_masks"] = np.moveaxis(lesion, -1, 0)
    return maps


def _locate(
    report: CaseReport,
    subject: Subject,
    image: np.ndarray,
    channel: str,
    grid: Grid,
    settings: ReportSettings,
) -> None:
    """Register ``channel`` to the template and give every lesion its location class.

    Raises:
        LesionsegError: A mask on another grid, or a registration that fails.
    """
    from lesionseg.report.locations import classify_lesions
    from lesionseg.report.registration import regions_on_subject, register_to_template

    mask = image > 0  # without a mask: the non-zero voxels of a skull-stripped image
    if subject.mask is not None:
        mask, mask_grid = _canonical(subject.mask, dtype=np.uint8)
        if not mask_grid.same_as(grid):
            raise LesionsegError("the brain mask is not on the segmentation's grid", subject.mask)
    try:
        registration = register_to_template(
            image,
            grid.affine,
            mask,
            bspline=settings.registration == "bspline",
            seed=settings.seed,
        )
    except (RuntimeError, LesionsegError) as err:  # SimpleITK's or ours: not a brain?
        reason = str(err).strip().splitlines()[-1][:160]
        raise LesionsegError(
            f"registration of {channel} to the template failed ({reason}); "
            "--registration none skips the location classes",
            subject.channels[channel],
        ) from None
    regions = regions_on_subject(registration, report.numbered.shape, grid.affine)
    classes = classify_lesions(report.numbered, regions)
    for lesion in report.table.lesions:
        lesion.location = classes.get(lesion.id)
    report.table.locations = {
        "rule": "LST-AI: after a one-voxel dilation, touching the ventricles: "
        "periventricular; else touching the cortex: juxtacortical; else mostly in the "
        "infratentorial region: infratentorial; else subcortical",
        "channel": channel,
        "registration": registration.summary(),
    }


def report_case(
    files: PredictionFiles, subject: Subject | None, settings: ReportSettings
) -> CaseReport:
    """The lesion table of one case (and, with the subject's images, its locations).

    Args:
        files: The case's prediction files.
        subject: The case's images (and brain mask), or None: no locations, no image.
        settings: Counting and location settings.

    Raises:
        LesionsegError: Unreadable files, files on another grid, an unknown channel.
    """
    labels, grid = _canonical(files.segmentation, dtype=np.int16)
    maps = _prediction_maps(files, grid, settings)
    table, numbered = lesion_table(
        files.case,
        labels,
        grid.affine,
        **maps,
        lesion_labels=settings.lesion_labels,
        connectivity=settings.connectivity,
        min_size_voxels=settings.min_size_voxels,
    )
    table.files = files.as_dict()
    report = CaseReport(table, numbered, grid.affine, probabilities=maps["probabilities"])
    if subject is None:
        return report
    registered = _channel(subject, settings.register_channel)
    channel = _channel(subject, settings.channel or registered, "--channel")
    images = {name: _subject_image(subject, name, grid, files) for name in {registered, channel}}
    report.image, report.channel = images[channel], channel
    table.files["image"] = str(subject.channels[channel])
    if settings.registration != "none":
        _locate(report, subject, images[registered], registered, grid, settings)
    return report


def _csv(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def summary_rows(tables: Sequence[CaseTable]) -> list[dict]:
    """One row per case: count and volume, and per location when classified."""
    from lesionseg.report.locations import LOCATION_CLASSES

    rows = []
    for table in tables:
        totals = table.totals()
        row = {"case": table.case, "lesions": totals["count"], "volume_ml": totals["volume_ml"]}
        for name in LOCATION_CLASSES:
            by = (totals.get("by_location") or {}).get(name)
            row[f"{name}_count"] = "" if by is None else by["count"]
            row[f"{name}_ml"] = "" if by is None else by["volume_ml"]
        rows.append(row)
    return rows


def write_case(report: CaseReport, out: Path, settings: ReportSettings) -> dict[str, Path]:
    """Write one case's CSV, JSON and page; returns the paths by role."""
    from lesionseg.report.html import case_page

    table = report.table
    paths = {
        "csv": out / f"{table.case}_lesions.csv",
        "json": out / f"{table.case}_lesions.json",
        "page": out / f"{table.case}.html",
    }
    write_text_atomic(paths["csv"], table.to_csv())
    write_json_atomic(paths["json"], table.to_json())
    image = report.image
    if image is None:  # no image given: the page shows the lesions on themselves
        image = (report.numbered > 0).astype(np.float32)
    html = case_page(
        table,
        image,
        report.numbered,
        report.affine,
        channel=report.channel or "the segmentation (no image given)",
        probabilities=report.probabilities,
        largest=settings.largest,
        viewer=settings.viewer,
    )
    write_text_atomic(paths["page"], html)
    return paths


def write_summary(tables: Sequence[CaseTable], out: Path, pages: Mapping[str, str]) -> None:
    """The data-set files: every lesion, one row per case, totals, and the index page."""
    from lesionseg.report.html import index_page

    every = [{"case": t.case, **les.row()} for t in tables for les in t.lesions]
    write_text_atomic(out / "lesions.csv", _csv(every, ("case", *COLUMNS)))
    rows = summary_rows(tables)
    write_text_atomic(out / "summary.csv", _csv(rows, list(rows[0]) if rows else ["case"]))
    write_json_atomic(
        out / "summary.json",
        {
            "cases": len(tables),
            "lesions": sum(len(t.lesions) for t in tables),
            "volume_ml": round(sum(t.totals()["volume_ml"] for t in tables), 4),
            "rules": sorted({t.rules().split(": ", 1)[1] for t in tables}),
            "per_case": rows,
        },
    )
    write_text_atomic(out / "index.html", index_page(tables, pages))


def iter_reports(
    predictions: Sequence[PredictionFiles],
    subjects: Mapping[str, Subject],
    settings: ReportSettings,
) -> Iterator[CaseReport]:
    """Report every case (its subject's images when known), one at a time."""
    for files in predictions:
        yield report_case(files, subjects.get(files.case), settings)


def write_report(
    predictions_dir: str | Path,
    out_dir: str | Path,
    subjects: Sequence[Subject] = (),
    settings: ReportSettings | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
    cases: Sequence[str] | None = None,
) -> list[CaseTable]:
    """Write the report of a prediction folder (see the module docstring).

    Args:
        predictions_dir: The folder ``lesionseg predict`` wrote.
        out_dir: The report folder (created; only lesionseg's report files are replaced).
        subjects: The cases' images, matched to predictions by case id (optional).
        settings: Counting, location and page settings.
        overwrite: Replace an earlier report in ``out_dir``.
        progress: Show a progress bar.
        cases: Report only these cases of the folder (None: every case).

    Returns:
        The case tables.

    Raises:
        LesionsegError: Unreadable inputs, or an output folder in the way.
    """
    from tqdm import tqdm

    from lesionseg.data.ownership import prepare_output_folder

    settings = settings or ReportSettings()
    if settings.registration not in REGISTRATIONS:
        raise LesionsegError(
            f"--registration must be one of {', '.join(REGISTRATIONS)}, got "
            f"{settings.registration!r}"
        )
    predictions = find_predictions(predictions_dir)
    if cases is not None:
        predictions = [p for p in predictions if p.case in set(cases)]
    by_id = {s.id: s for s in subjects}
    if len(subjects) == 1 and len(predictions) == 1:  # one subject's files, however named
        by_id = {predictions[0].case: subjects[0]}
    if subjects:
        missing = [p.case for p in predictions if p.case not in by_id]
        if missing:
            raise LesionsegError(
                f"no images given for case(s) {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else ""),
                predictions_dir,
            )
    out = prepare_output_folder(
        out_dir,
        REPORT_KIND,
        overwrite=overwrite,
        owned=OWNED,
        protect=[Path(predictions_dir)],
    )
    tables, pages = [], {}
    bar = tqdm(
        predictions, desc="report", unit="case", disable=not progress or len(predictions) < 2
    )
    for report in iter_reports(bar, by_id, settings):
        paths = write_case(report, out, settings)
        tables.append(report.table)
        pages[report.table.case] = paths["page"].name
    write_summary(tables, out, pages)
    return tables
