"""Bad data sets and images are refused where they are read, with the file (and row) named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionseg.data import dataset as dataset_module
from lesionseg.data import nifti
from lesionseg.data.dataset import (
    Subject,
    check_subject_id,
    load_dataset,
    load_manifest,
    load_msd,
    subject_from_files,
)
from lesionseg.data.nifti import available_memory, format_bytes, load_nifti
from lesionseg.errors import LesionsegError
from tests.conftest import write_nifti
from tests.safety.builders import (
    AFFINE,
    MANIFEST_HEADER,
    deny_reading,
    first_image,
    manifest,
    manifest_row,
    msd,
    patch_header,
    rename_case,
)

SHAPE = (20, 24, 16)
ROWS = [manifest_row("case_000", 0), manifest_row("case_001", 1)]
PLAIN = "\n".join([MANIFEST_HEADER, *ROWS]) + "\n"


def rows_csv(*rows: str, header: str = MANIFEST_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def refused(load, *args, **kwargs) -> str:
    """The message of the LesionsegError that ``load(*args)`` raises."""
    with pytest.raises(LesionsegError) as info:
        load(*args, **kwargs)
    return str(info.value)


def contents(ds) -> list:
    return [(s.id, s.split, dict(s.channels), s.label, s.mask) for s in ds]


# 1: subject ids -------------------------------------------------------------------------------


BAD_IDS = [
    ("", "it is empty"),
    (".", "'.' and '..' name folders"),
    ("..", "'.' and '..' name folders"),
    ("a/b", "path separator"),
    ("/tmp/evil", "path separator"),
    ("a\\b", "path separator"),
    ("a\x00b", "control character"),
    ("a\nb", "control character"),
    (".hidden", "starts with '.'"),
    ("x" * 201, "201 bytes long (at most 200)"),
]


@pytest.mark.parametrize("sid,words", BAD_IDS)
def test_unsafe_subject_ids_are_refused(sid, words):
    message = refused(check_subject_id, sid, Path("m.csv"), "line 7")
    assert message.startswith("m.csv: line 7: invalid subject id")
    assert words in message
    assert "\n" not in message


@pytest.mark.parametrize("sid", ["case_000", "sub-01 ses-2", "a.b", "x" * 200, "caf\u00e9", "1"])
def test_safe_subject_ids_pass(sid):
    assert check_subject_id(sid) == sid


@pytest.mark.parametrize("sid,words", BAD_IDS[:6])
def test_manifest_ids_are_checked_naming_the_line(tmp_path, sid, words):
    path = manifest(tmp_path / "ds", rows_csv(ROWS[0], manifest_row(sid, 1)))
    message = refused(load_manifest, path)
    assert message.startswith(f"{path}: line 3: invalid subject id")
    assert words in message


@pytest.mark.parametrize("case", ["..", ".", ".hidden"])
def test_msd_case_names_are_checked_naming_the_file(tmp_path, case):
    root = msd(tmp_path / "ds")
    rename_case(root, "case_001", case)
    message = refused(load_msd, root)
    assert message.startswith(f"{root / 'imagesTr' / f'{case}_0000.nii.gz'}: invalid subject id")


def test_name_option_and_file_names_are_checked():
    assert "--name: invalid subject id '../x'" in refused(
        subject_from_files, ["t1.nii.gz"], ["T1"], subject_id="../x"
    )
    message = refused(subject_from_files, ["in/.t1_0000.nii.gz"], ["T1"])
    assert message.startswith("in/.t1_0000.nii.gz: invalid subject id '.t1'")
    assert subject_from_files(["in/t1_0000.nii.gz"], ["T1"], subject_id="p01").id == "p01"


def test_every_subject_is_checked_however_made():
    message = refused(Subject, "..", {"T1": Path("a.nii.gz")})
    assert message.startswith("a.nii.gz: invalid subject id '..'")


# 4: wrong results without an error -------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"channel_names": {"0": "T1", "1": "T1"}}, "channel name 'T1' is given twice"),
        ({"labels": {"background": 0, "a": 1, "b": 1}}, "label value 1 is given twice ('a'"),
        ({"labels": {"0": "background", "background": 0}}, "label value 0 is given twice"),
        ({"labels": {"background": 0, "lesion": 300}}, "value 300 is outside 0-255"),
        ({"labels": {"background": 0, "lesion": -1}}, "value -1 is outside 0-255"),
        ({"labels": {"background": 0, "lesion": 1.5}}, "'lesion': 1.5 is not an integer"),
        ({"labels": {"background": 0, "lesion": True}}, "'lesion': True is not an integer"),
    ],
)
def test_dataset_json_that_would_mislabel(tmp_path, spec, words):
    root = msd(tmp_path / "ds", **spec)
    message = refused(load_msd, root)
    assert message.startswith(str(root / "dataset.json")) and words in message


def test_duplicate_manifest_columns(tmp_path):
    path = manifest(tmp_path / "ds", rows_csv(*ROWS, header="subject,T1,T1,label,split"))
    assert f"{path}: line 1: column 'T1' appears twice" in refused(load_manifest, path)


def test_case_in_both_splits(tmp_path):
    root = msd(tmp_path / "ds")
    for c in range(2):
        old = root / "imagesTs" / f"case_002_{c:04d}.nii.gz"
        old.rename(old.with_name(f"case_000_{c:04d}.nii.gz"))
    assert "case 'case_000' is in both imagesTr and imagesTs" in refused(load_msd, root)


def image(tmp_path, data=None, name="img.nii.gz", **header) -> Path:
    """A small NIfTI file, with raw header fields changed after writing."""
    data = np.ones(SHAPE, np.float32) if data is None else data
    path = write_nifti(tmp_path / name, data, AFFINE)
    return patch_header(path, **header) if header else path


@pytest.mark.parametrize(
    "data,words",
    [
        (np.ones(SHAPE, np.complex64), "complex-valued voxels (data type complex64)"),
        (np.ones(SHAPE, np.complex128), "complex-valued voxels (data type complex128)"),
        (np.zeros(SHAPE, [("R", "u1"), ("G", "u1"), ("B", "u1")]), "(data type RGB)"),
        (np.zeros(SHAPE, [(c, "u1") for c in "RGBA"]), "(data type RGBA)"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, None])
def test_complex_and_colour_voxels(tmp_path, data, words, dtype):
    path = image(tmp_path, data)
    message = refused(load_nifti, path, dtype=dtype)
    assert message.startswith(str(path)) and words in message and "not supported" in message


@pytest.mark.parametrize("size", [0.0, -1.5, np.nan, np.inf])
@pytest.mark.parametrize("qform_code", [1, 0])
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_bad_voxel_size_in_the_header(tmp_path, size, qform_code):
    pixdim = [1.0, 1.0, 1.2, 2.0, 1, 1, 1, 1]
    pixdim[3] = size
    path = image(tmp_path, sform_code=0, qform_code=qform_code, pixdim=pixdim)
    message = refused(load_nifti, path)
    assert f"voxel size {size:g} mm along axis 2 (pixdim[3])" in message
    assert message.startswith(str(path))


def test_zero_pixdim_is_fine_when_the_sform_gives_the_geometry(tmp_path):
    path = image(tmp_path, pixdim=[1, 0, 0, 0, 1, 1, 1, 1])
    assert load_nifti(path).grid.spacing == pytest.approx((1.0, 1.2, 2.0))


@pytest.mark.parametrize(
    "rows,words",
    [
        ({"srow_y": [0, 0, 0, 0]}, "voxel size is 0 mm along axis 1 in the sform (code 1)"),
        ({"srow_x": [0] * 4, "srow_y": [0] * 4, "srow_z": [0] * 4}, "is all zeros, so singular"),
        ({"srow_x": [1, 1, 0, 0], "srow_y": [1, 1, 0, 0]}, "sform (code 1) is singular"),
        ({"srow_z": [0, 0, np.nan, 0]}, "holds NaN or Inf"),
    ],
)
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_unusable_affine(tmp_path, rows, words):
    path = image(tmp_path, qform_code=0, **rows)
    message = refused(load_nifti, path)
    assert message.startswith(str(path)) and words in message


# 5: crashes that are now a clear line ---------------------------------------------------------


def test_missing_manifest_files_name_the_line_and_file(tmp_path):
    row = ROWS[1].replace("case_001_0001", "nope")
    path = manifest(tmp_path / "ds", rows_csv(ROWS[0], row))
    message = refused(load_manifest, path)
    assert message == (
        f"{path}: line 3: subject 'case_001': FLAIR file {path.parent / 'imagesTr/nope.nii.gz'} "
        "not found"
    )
    (tmp_path / "ds" / "imagesTr" / "nope.nii.gz").mkdir()
    assert "is a folder, not a file" in refused(load_manifest, path)
    path.write_text(rows_csv(ROWS[0].replace("labelsTr/case_000", "gone")))
    assert "line 2: subject 'case_000': label file" in refused(load_manifest, path)


def test_structure_is_reported_before_missing_files(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("subject,T1\nx,a.nii.gz\nx,b.nii.gz\n")
    assert "line 3: subject 'x' appears twice" in refused(load_manifest, path)


@pytest.mark.parametrize(
    "text,words",
    [
        (rows_csv(ROWS[0], ROWS[1] + ",x"), "line 3: 6 fields but the header has 5 columns"),
        (rows_csv(ROWS[0], header="subject,T1,,FLAIR,label"), "column 3 of the header has no name"),
        (
            rows_csv(ROWS[0], header="id,T1,FLAIR"),
            "needs a 'subject' column (header: id, T1, FLAIR)",
        ),
        (rows_csv(header="subject,label"), "manifest has no channel columns"),
        (MANIFEST_HEADER + "\n\n", "manifest lists no subjects"),
        ("\n \n", "manifest is empty"),
        (rows_csv(ROWS[0].replace("train", "val")), "line 2: split must be 'train' or 'test'"),
        (rows_csv(ROWS[0], 'case_001,"unclosed\n'), "malformed"),
    ],
)
def test_malformed_manifests(tmp_path, text, words):
    path = manifest(tmp_path / "ds", text)
    message = refused(load_manifest, path)
    assert message.startswith(str(path)) and words in message


def test_manifest_not_utf8_names_the_line(tmp_path):
    path = manifest(tmp_path / "ds", rows_csv(*ROWS, "caf\u00e9,a,b"), encoding="latin-1")
    assert f"{path}: not UTF-8 text (byte 0xe9 on line 4)" in refused(load_manifest, path)


@pytest.mark.parametrize(
    "variant",
    [
        PLAIN.encode("utf-8-sig"),
        ("\n\n" + PLAIN).encode(),
        PLAIN.replace("\n", "\n\n").encode(),
        PLAIN.replace("\n", "\r\n").encode(),
        PLAIN.replace("\n", ",,\n").encode(),  # spreadsheet leftovers: empty trailing cells
        PLAIN.replace(",", " , ").encode(),
    ],
    ids=["bom", "blank-first-lines", "blank-lines-between", "crlf", "trailing-cells", "spaces"],
)
def test_manifest_variants_load_the_same_subjects(tmp_path, variant):
    plain = load_manifest(manifest(tmp_path / "ds", PLAIN))
    other = load_manifest(manifest(tmp_path / "ds", variant, name="other.csv"))
    assert other.channel_names == plain.channel_names == ["T1", "FLAIR"]
    assert contents(other) == contents(plain) and len(plain) == 2


def test_tsv_manifest(tmp_path):
    plain = load_manifest(manifest(tmp_path / "ds", PLAIN))
    tsv = load_dataset(manifest(tmp_path / "ds", PLAIN.replace(",", "\t"), name="m.tsv"))
    assert contents(tsv) == contents(plain)


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"channel_names": ["T1", "FLAIR"]}, 'channel_names must be an object like {"0": "T1"}'),
        ({"channel_names": "T1"}, "channel_names must be an object like"),
        ({"channel_names": {"0": "T1", "1": None}}, "channel '1' needs a name, found None"),
        ({"channel_names": {"0": "T1", "x": "FLAIR"}}, "keys must be '0', '1', ..."),
        ({"labels": ["background", "lesion"]}, "labels must be an object like"),
        ({"labels": None}, 'labels must be an object like {"background": 0'),
        ({"numTraining": "two"}, 'numTraining must be a whole number, found a string "two"'),
        ({"numTraining": 2.5}, "numTraining must be a whole number, found a number 2.5"),
        ({"numTraining": [2]}, "numTraining must be a whole number, found a list [2]"),
        ({"numTraining": True}, "numTraining must be a whole number, found true"),
        ({"file_ending": 5}, "file_ending must be a string, found a number"),
        ({"file_ending": "/../x.nii.gz"}, "is not NIfTI"),
        ({"name": {"a": 1}}, "name must be a string, found an object"),
    ],
)
def test_malformed_dataset_json(tmp_path, spec, words):
    root = msd(tmp_path / "ds", **spec)
    message = refused(load_msd, root)
    assert message.startswith(str(root / "dataset.json")) and words in message


@pytest.mark.parametrize(
    "content,words",
    [
        (b"[1, 2]", "must hold a JSON object {...}, found a list"),
        (b'"tiny"', "found a string"),
        (b"null", "found null"),
        (b"[" * 100000, "invalid JSON (nested too deeply)"),
        ('{"name": "caf\u00e9"}'.encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 1)"),
    ],
)
def test_dataset_json_that_is_no_json_object(tmp_path, content, words):
    root = msd(tmp_path / "ds")
    (root / "dataset.json").write_bytes(content)
    message = refused(load_msd, root)
    assert message.startswith(str(root / "dataset.json")) and words in message


def test_dataset_json_accepts_bom_and_whole_numbers_as_text(tmp_path):
    plain = load_msd(msd(tmp_path / "a"))
    root = msd(tmp_path / "b", numTraining="2", labels={"0": "background", "1": "lesion"})
    spec = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_bytes(json.dumps(spec).encode("utf-8-sig"))
    other = load_msd(root)
    assert other.labels == plain.labels and [s.id for s in other] == [s.id for s in plain]


def test_huge_volume_is_refused_before_reading(tmp_path, monkeypatch):
    path = image(tmp_path, dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])
    message = refused(load_nifti, path)
    assert message.startswith(str(path))
    assert "30000x30000x30000 voxels of float32 need about 108 TB of memory" in message
    monkeypatch.setattr(nifti, "available_memory", lambda: 10_000)
    message = refused(load_nifti, image(tmp_path, name="small.nii"), dtype=None)
    assert "need about 30.7 kB of memory to read, but only 10 kB is available" in message


def test_nifti2_dimensions_beyond_nifti1(tmp_path):
    path = tmp_path / "big.nii"
    nib.save(nib.Nifti2Image(np.ones((2, 2, 2), np.float32), AFFINE), str(path))
    patch_header(path, dim=[3, 100000, 100000, 100000, 1, 1, 1, 1])
    assert "100000x100000x100000 voxels" in refused(load_nifti, path)


def test_memory_error_while_reading_names_the_file_and_size(tmp_path, monkeypatch):
    def no_memory(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(nifti, "available_memory", lambda: None)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", no_memory)
    path = image(tmp_path, np.ones(SHAPE, np.int16))
    message = refused(load_nifti, path)
    assert message == f"{path}: not enough memory to read the voxel data (about 46.1 kB needed)"


def test_available_memory_without_psutil(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # makes "import psutil" fail
    assert available_memory() > 100_000_000


@pytest.mark.parametrize("size,text", [(999, "999 B"), (46_080, "46.1 kB"), (4.2e15, "4.2 PB")])
def test_format_bytes(size, text):
    assert format_bytes(size) == text


@pytest.mark.parametrize("module", [nifti, dataset_module])
def test_unreadable_files(tmp_path, monkeypatch, module):
    path = manifest(tmp_path / "ds", PLAIN)
    locked = first_image(tmp_path / "ds") if module is nifti else path
    deny_reading(monkeypatch, module, locked)
    load = load_nifti if module is nifti else load_manifest
    assert refused(load, locked) == f"{locked}: cannot read (Permission denied)"


def test_unlistable_folder(tmp_path, monkeypatch):
    root = msd(tmp_path / "ds")
    real_iterdir = Path.iterdir

    def guarded_iterdir(self):
        if self.name == "labelsTr":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", guarded_iterdir)
    assert refused(load_dataset, root) == f"{root / 'labelsTr'}: cannot read (Permission denied)"


def test_info_on_an_all_nan_image_says_so(tmp_path, capsys):
    import numpy as np

    from lesionseg.cli.main import main
    from tests.conftest import write_nifti

    path = write_nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    assert main(["info", str(path)]) == 0
    assert "none finite" in capsys.readouterr().out
