"""Safety cases for reading data sets and images: subject ids, silent wrong results, crashes.

Each case breaks one thing in a tiny data set (MSD folder or CSV manifest) and runs
``lesionseg preprocess`` on it (or ``lesionseg info`` on one image); the run must stop with
one line naming the file (and row) and the problem, and leave everything else alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from lesionseg.data import dataset, nifti
from tests.safety.builders import (
    MANIFEST_HEADER,
    deny_reading,
    first_image,
    manifest,
    manifest_row,
    msd,
    patch_header,
    rename_case,
    replace_image,
)
from tests.safety.harness import Case, Setup

ROWS = [manifest_row("case_000", 0), manifest_row("case_001", 1)]


def _preprocess(source: Path, work: Path) -> tuple[list[str], Path]:
    out = work / "out"
    return ["preprocess", str(source), "-o", str(out)], out


def _csv(text: str, encoding: str = "utf-8", name: str = "manifest.csv") -> Setup:
    """A manifest with ``text`` beside the images of :func:`msd`."""

    def setup(work, monkeypatch):
        return _preprocess(manifest(work / "ds", text, name=name, encoding=encoding), work)

    return setup


def _csv_rows(*rows: str, header: str = MANIFEST_HEADER) -> Setup:
    return _csv("\n".join([header, *rows]) + "\n")


def _csv_id(sid: str) -> Setup:
    """A manifest whose second subject (line 3) is called ``sid``."""
    return _csv_rows(ROWS[0], manifest_row(sid, 1))


def _msd(change: Callable[[Path], object] = lambda root: None, **spec) -> Setup:
    """An MSD data set with dataset.json keys ``spec``, then ``change(root)`` applied."""

    def setup(work, monkeypatch):
        root = msd(work / "ds", **spec)
        change(root)
        return _preprocess(root, work)

    return setup


def _msd_case_named(name: str) -> Setup:
    return _msd(lambda root: rename_case(root, "case_001", name))


def _dataset_json(content: bytes) -> Setup:
    return _msd(lambda root: (root / "dataset.json").write_bytes(content))


def _info(change: Callable[[Path], Path]) -> Setup:
    """``lesionseg info`` on the first image of an MSD data set after ``change(root)``."""

    def setup(work, monkeypatch):
        path = change(msd(work / "ds"))
        return ["info", str(path)], None

    return setup


def _unreadable(module: ModuleType, target: Callable[[Path], Path]) -> Setup:
    """A file the reader in ``module`` may not read (see :func:`deny_reading`)."""

    def setup(work, monkeypatch):
        root = msd(work / "ds")
        manifest(root, "\n".join([MANIFEST_HEADER, *ROWS]) + "\n")
        deny_reading(monkeypatch, module, target(root))
        return _preprocess(root / "manifest.csv", work)

    return setup


def _second_case_in_test_split(root: Path) -> None:
    for c in range(2):
        name = f"case_002_{c:04d}.nii.gz"
        (root / "imagesTs" / name).rename(root / "imagesTs" / name.replace("002", "001"))


def _zero_column_sform(root: Path) -> None:
    patch_header(first_image(root), srow_y=[0.0, 0.0, 0.0, 0.0])


def _huge_volume(root: Path) -> Path:
    return patch_header(first_image(root), dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])


RGB = [("R", "u1"), ("G", "u1"), ("B", "u1")]
SHAPE = (20, 24, 16)

CASES = [
    # 1: subject ids that would make later code write or delete outside its folder
    *[
        Case(f"data-id-{name}-csv", 1, _csv_id(sid), ("manifest.csv", "line 3", what))
        for name, sid, what in [
            ("dotdot", "..", "invalid subject id '..'"),
            ("dot", ".", "invalid subject id '.'"),
            ("slash", "a/b", "path separator"),
            ("backslash", "a\\b", "path separator"),
            ("absolute", "/tmp/evil", "path separator"),
            ("hidden", ".hidden", "starts with '.'"),
            ("control", "a\x07b", "control character"),
            ("long", "x" * 201, "201 bytes"),
            ("empty", "", "it is empty"),
        ]
    ],
    Case(
        "data-id-dotdot-msd",
        1,
        _msd_case_named(".."),
        (".._0000.nii.gz", "invalid subject id '..'"),
    ),
    Case("data-id-dot-msd", 1, _msd_case_named("."), ("._0000.nii.gz", "invalid subject id '.'")),
    # 4: inputs that gave wrong results without a word
    Case(
        "data-duplicate-channel-names",
        4,
        _msd(channel_names={"0": "T1", "1": "T1"}),
        ("dataset.json", "channel name 'T1' is given twice"),
    ),
    Case(
        "data-duplicate-label-values",
        4,
        _msd(labels={"background": 0, "lesion": 1, "edema": 1}),
        ("dataset.json", "label value 1 is given twice"),
    ),
    Case(
        "data-label-value-over-255",
        4,
        _msd(labels={"background": 0, "lesion": 300}),
        ("dataset.json", "value 300 is outside 0-255"),
    ),
    Case(
        "data-duplicate-csv-columns",
        4,
        _csv_rows(*ROWS, header="subject,T1,T1,label,split"),
        ("manifest.csv", "column 'T1' appears twice"),
    ),
    Case(
        "data-case-in-train-and-test",
        4,
        _msd(_second_case_in_test_split),
        ("ds", "case 'case_001' is in both imagesTr and imagesTs"),
    ),
    Case(
        "data-complex-image",
        4,
        _msd(lambda root: replace_image(root, np.ones(SHAPE, np.complex64))),
        ("case_000_0000.nii.gz", "complex-valued voxels"),
    ),
    *[
        Case(
            f"data-voxel-size-{name}",
            4,
            _msd(
                lambda root, size=size: patch_header(
                    first_image(root), sform_code=0, pixdim=[1, 1, size, 1, 1, 1, 1, 1]
                )
            ),
            ("case_000_0000.nii.gz", f"voxel size {shown} mm along axis 1 (pixdim[2])"),
        )
        for name, size, shown in [
            ("zero", 0.0, "0"),
            ("negative", -1.0, "-1"),
            ("nan", np.nan, "nan"),
        ]
    ],
    Case(
        "data-voxel-size-zero-sform",
        4,
        _msd(_zero_column_sform),
        ("case_000_0000.nii.gz", "voxel size is 0 mm along axis", "sform"),
    ),
    # 5: inputs that ended in an internal error
    Case(
        "data-manifest-missing-file",
        5,
        _csv_rows(ROWS[0], ROWS[1].replace("case_001_0001", "case_009_0001")),
        ("manifest.csv", "line 3", "FLAIR file", "case_009_0001.nii.gz not found"),
    ),
    Case(
        "data-channel-names-list",
        5,
        _msd(channel_names=["T1", "FLAIR"]),
        ("dataset.json", "channel_names must be an object", "found a list"),
    ),
    Case(
        "data-labels-list",
        5,
        _msd(labels=["background", "lesion"]),
        ("dataset.json", "labels must be an object", "found a list"),
    ),
    Case(
        "data-num-training-text",
        5,
        _msd(numTraining="two"),
        ("dataset.json", "numTraining must be a whole number", '"two"'),
    ),
    Case(
        "data-json-not-object",
        5,
        _dataset_json(b'["T1", "FLAIR"]'),
        ("dataset.json", "must hold a JSON object", "found a list"),
    ),
    Case(
        "data-json-not-utf8",
        5,
        _dataset_json(json.dumps({"name": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")),
        ("dataset.json", "not UTF-8"),
    ),
    Case(
        "data-json-bom-ok",
        5,
        _dataset_json(
            json.dumps(
                {
                    "name": "caf\u00e9",
                    "channel_names": {"0": "T1", "1": "FLAIR"},
                    "labels": {"background": 0, "lesion": 1},
                    "numTraining": 2,
                },
                ensure_ascii=False,
            ).encode("utf-8-sig")
        ),
        code=0,
    ),
    Case(
        "data-csv-not-utf8",
        5,
        _csv("\n".join([MANIFEST_HEADER, *ROWS, manifest_row("caf\u00e9", 2)]) + "\n", "latin-1"),
        ("manifest.csv", "not UTF-8", "line 4"),
    ),
    Case("data-csv-bom-ok", 5, _csv("\n".join([MANIFEST_HEADER, *ROWS]), "utf-8-sig"), code=0),
    Case("data-csv-blank-lines-ok", 5, _csv("\n\n".join(["", MANIFEST_HEADER, *ROWS])), code=0),
    Case(
        "data-tsv-ok",
        5,
        _csv("\n".join([MANIFEST_HEADER, *ROWS]).replace(",", "\t"), name="manifest.tsv"),
        code=0,
    ),
    Case(
        "data-csv-extra-field",
        5,
        _csv_rows(ROWS[0], ROWS[1] + ",extra"),
        ("manifest.csv", "line 3", "6 fields but the header has 5 columns"),
    ),
    Case(
        "data-csv-unnamed-column",
        5,
        _csv_rows(
            *[r.replace(",train", ",,train") for r in ROWS], header="subject,T1,FLAIR,label,,split"
        ),
        ("manifest.csv", "line 1", "column 5 of the header has no name"),
    ),
    Case(
        "data-csv-only-header",
        5,
        _csv(MANIFEST_HEADER + "\n"),
        ("manifest.csv", "lists no subjects"),
    ),
    Case("data-csv-empty", 5, _csv("\n\n"), ("manifest.csv", "manifest is empty")),
    Case(
        "data-rgb-image",
        5,
        _msd(lambda root: replace_image(root, np.zeros(SHAPE, RGB))),
        ("case_000_0000.nii.gz", "colour (RGB/RGBA) voxels (data type RGB)"),
    ),
    Case(
        "data-singular-affine",
        5,
        _msd(
            lambda root: patch_header(
                first_image(root), qform_code=0, srow_x=[0] * 4, srow_y=[0] * 4, srow_z=[0] * 4
            )
        ),
        ("case_000_0000.nii.gz", "affine from the sform (code 1) is all zeros"),
    ),
    Case(
        "data-huge-volume",
        5,
        _info(_huge_volume),
        ("case_000_0000.nii.gz", "30000x30000x30000 voxels", "memory"),
    ),
    Case(
        "data-unreadable-image",
        5,
        _unreadable(nifti, first_image),
        ("case_000_0000.nii.gz", "cannot read (Permission denied)"),
    ),
    Case(
        "data-unreadable-manifest",
        5,
        _unreadable(dataset, lambda root: root / "manifest.csv"),
        ("manifest.csv", "cannot read (Permission denied)"),
    ),
]
