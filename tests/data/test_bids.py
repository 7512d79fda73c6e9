"""BIDS in and out: ``synth --bids`` and ``lesionseg bids`` give data sets the official
validator accepts, pybids finds the outputs, and the masks are ``lesionseg predict``'s."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionseg.cli.main import main
from lesionseg.data.bids import (
    BidsImage,
    Visit,
    bids_name,
    channel_queries,
    match_channels,
    matching_images,
    method_label,
    parse_channel_map,
    strip_labels,
)
from lesionseg.errors import LesionsegError
from lesionseg.models import MODELS
from lesionseg.models.io import save_model
from tests.conftest import write_nifti
from tests.inference.conftest import CentreThreshold
from tests.inference.test_predict_pipeline import make_images

VALIDATOR = shutil.which("bids-validator-deno") or str(
    Path(sys.executable).parent / "bids-validator-deno"
)
AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


@pytest.fixture(autouse=True)
def registered_test_model():
    """The saved test models name this model; register it for each test only."""
    with MODELS.registered("test-centre-threshold", CentreThreshold):
        yield


def validation_errors(folder: Path) -> list[str]:
    """The errors the BIDS validator reports for ``folder`` (warnings are fine)."""
    result = subprocess.run(
        [VALIDATOR, str(folder), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    errors = [i for i in report["issues"]["issues"] if i.get("severity") == "error"]
    assert (result.returncode == 0) == (not errors), result.stderr[-2000:]
    return [f"{i['code']} {i.get('location')} {i.get('subCode')}" for i in errors]


def make_model(folder: Path, channels=("FLAIR", "T1"), classes=2, threshold=3.0) -> Path:
    """A saved model labelling voxels whose z-scored first channel is above ``threshold``."""
    options = {"context": 5, "channel": 0, "threshold": threshold}
    labels = {"0": "background", "1": "lesion", "2": "rim"}
    config = {
        "recipe": {
            "name": "centre-threshold",
            "model": {"name": "test-centre-threshold", **options},
            "predict": {"postprocess": []},
        },
        "channel_names": list(channels),
        "labels": {k: v for k, v in labels.items() if int(k) < classes},
        "preprocess": {},
    }
    save_model(CentreThreshold(len(channels), classes, **options), config, folder)
    return folder


def write_raw(root: Path, subjects=("01", "02"), sessions=(None,)) -> Path:
    """A tiny raw BIDS data set: T1w and FLAIR per subject [and session]."""
    root.mkdir(parents=True, exist_ok=True)
    description = {"Name": "tiny", "BIDSVersion": "1.10.0", "DatasetType": "raw"}
    (root / "dataset_description.json").write_text(json.dumps(description))
    rows = "".join(f"sub-{s}\n" for s in subjects)
    (root / "participants.tsv").write_text("participant_id\n" + rows)
    for i, subject in enumerate(subjects):
        t1, flair, _ = make_images(seed=i)
        for session in sessions:
            visit = Visit(subject, session)
            folder = root / visit.folder / "anat"
            write_nifti(folder / bids_name(visit.entities, "T1w"), t1, AFFINE)
            write_nifti(folder / bids_name(visit.entities, "FLAIR"), flair, AFFINE)
    return root


@pytest.fixture
def raw(tmp_path) -> Path:
    return write_raw(tmp_path / "raw")


@pytest.fixture
def model(tmp_path) -> Path:
    return make_model(tmp_path / "model")


def app(raw: Path, out: Path, model: Path, *extra: str) -> int:
    args = ["bids", str(raw), str(out), "participant", "-m", str(model), "--device", "cpu"]
    return main([*args, "--quiet", *extra])


def voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def derivative_layout(out: Path):
    from bids import BIDSLayout

    return BIDSLayout(out, validate=False, config=["bids", "derivatives"])


# --------------------------------------------------------------- synth --bids: raw BIDS


@pytest.mark.parametrize(
    "task, files",
    [
        ("ms", ["anat/sub-001_T1w", "anat/sub-001_T2w", "anat/sub-001_PDw", "anat/sub-001_FLAIR"]),
        ("tumor", ["anat/sub-001_T1w", "anat/sub-001_ce-gadolinium_T1w", "anat/sub-001_FLAIR"]),
        ("stroke-acute", ["dwi/sub-001_dwi", "dwi/sub-001_acq-ADC_dwi"]),
        ("stroke-chronic", ["anat/sub-001_T1w"]),
    ],
)
def test_synth_bids_passes_the_validator(tmp_path, task, files, capsys):
    out = tmp_path / task
    args = ["synth", task, "-o", str(out), "--subjects", "1", "--spacing", "8", "--bids"]
    assert main(args) == 0
    for name in files:
        assert (out / "sub-001" / f"{name}.nii.gz").is_file(), name
    assert validation_errors(out) == []
    truth = out / "derivatives" / "lesionseg-phantoms"
    assert validation_errors(truth) == []
    suffix = "dseg" if task == "tumor" else "label-lesion_mask"
    datatype = "dwi" if task == "stroke-acute" else "anat"
    assert (truth / "sub-001" / datatype / f"sub-001_space-orig_{suffix}.nii.gz").is_file()
    rows = (out / "participants.tsv").read_text().splitlines()
    assert rows[1].split("\t")[:2] == ["sub-001", task.replace("-", "_") + "_000"]
    # a BIDS phantom folder is not an nnU-Net one: --overwrite does not cross the layouts
    capsys.readouterr()
    assert main(args[:-1] + ["--overwrite"]) == 2
    assert "phantoms-bids" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_synth_bids_overwrite_with_fewer_subjects_stays_valid(tmp_path):
    out = tmp_path / "bids"
    args = ["synth", "stroke-chronic", "-o", str(out), "--spacing", "8", "--bids"]
    assert main([*args, "--subjects", "2"]) == 0
    derived = out / "derivatives" / "lesionseg"
    derived.mkdir()
    (derived / "keep.txt").write_text("a later lesionseg bids output, not the phantoms'")
    assert main([*args, "--subjects", "1", "--overwrite"]) == 0
    assert not (out / "sub-002").exists() and (derived / "keep.txt").is_file()
    shutil.rmtree(derived)
    assert validation_errors(out) == []


def test_synth_bids_round_trip_through_the_app_on_dwi(tmp_path):
    """DWI and ADC are found without help; a DWI model writes into dwi/."""
    raw = tmp_path / "raw"
    synth = ["synth", "stroke-acute", "-o", str(raw), "--subjects", "1", "--spacing", "8"]
    assert main([*synth, "--bids"]) == 0
    model = make_model(tmp_path / "m", channels=("DWI", "ADC"), threshold=2.0)
    out = raw / "derivatives" / "lesionseg"
    assert app(raw, out, model, "--save-probabilities") == 0
    mask = out / "sub-001/dwi/sub-001_space-orig_label-lesion_desc-centrethreshold_mask.nii.gz"
    assert mask.is_file()
    assert validation_errors(out) == []
    sidecar = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Sources"] == [
        "bids:raw:sub-001/dwi/sub-001_dwi.nii.gz",
        "bids:raw:sub-001/dwi/sub-001_acq-ADC_dwi.nii.gz",
    ]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"] == {"raw": "../.."}  # inside BIDS_DIR: relative


# ------------------------------------------------------------------ lesionseg bids (App)


def test_app_end_to_end_is_valid_and_equals_predict(tmp_path, raw, model):
    out = tmp_path / "out"
    # one named layout for both runs: ``auto`` times the two, and their outputs agree
    # only to float rounding, where this compares bit for bit
    assert app(raw, out, model, "--save-probabilities", "--layout", "contiguous") == 0
    assert validation_errors(out) == []

    layout = derivative_layout(out)
    masks = layout.get(suffix="mask", extension=".nii.gz")
    assert sorted(f.entities["subject"] for f in masks) == ["01", "02"]
    for f in masks:
        assert f.entities["space"] == "orig" and f.entities["label"] == "lesion"
        assert f.entities["desc"] == "centrethreshold" and f.entities["datatype"] == "anat"
        assert "session" not in f.entities
    (prob,) = layout.get(subject="01", suffix="probseg", extension=".nii.gz")
    assert prob.entities["label"] == "lesion" and prob.entities["desc"] == "centrethreshold"

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "lesionseg"
    assert description["DatasetLinks"]["raw"] == raw.resolve().as_uri()

    anat = raw / "sub-01" / "anat"
    pred = tmp_path / "pred"
    inputs = [f"FLAIR={anat / 'sub-01_FLAIR.nii.gz'}", f"T1={anat / 'sub-01_T1w.nii.gz'}"]
    args = ["predict", "-m", str(model), "-i", *inputs, "-o", str(pred), "--device", "cpu"]
    args += ["--layout", "contiguous", "--save-probabilities", "--quiet", "--name", "s1"]
    assert main(args) == 0
    (mask,) = layout.get(subject="01", suffix="mask", extension=".nii.gz")
    expected = voxels(pred / "s1_seg.nii.gz")
    assert expected.sum() > 0
    np.testing.assert_array_equal(voxels(Path(mask.path)), expected)
    np.testing.assert_array_equal(voxels(Path(prob.path)), voxels(pred / "s1_prob.nii.gz")[..., 1])
    np.testing.assert_allclose(nib.load(mask.path).affine, AFFINE)

    sidecar = json.loads(Path(mask.path.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Sources"] == [
        "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz",
        "bids:raw:sub-01/anat/sub-01_T1w.nii.gz",
    ]
    assert sidecar["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz"
    assert not [p for p in out.rglob(".lesionseg-tmp-*")]  # the work folder is gone


@pytest.mark.parametrize("label", ["01", "sub-01"])
def test_participant_label_selects_one_subject(tmp_path, raw, model, label):
    out = tmp_path / "out"
    assert app(raw, out, model, "--participant_label", label) == 0
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-01"]
    assert app(raw, tmp_path / "x", model, "--participant-label", "03") == 2


def test_sessions_are_visits_and_can_be_chosen(tmp_path, model):
    raw = write_raw(tmp_path / "raw", subjects=("01",), sessions=("1", "2"))
    out = tmp_path / "out"
    assert app(raw, out, model, "--session-label", "ses-2") == 0
    (mask,) = out.rglob("*_mask.nii.gz")
    assert mask.relative_to(out).as_posix() == (
        "sub-01/ses-2/anat/sub-01_ses-2_space-orig_label-lesion_desc-centrethreshold_mask.nii.gz"
    )
    assert app(raw, out, model, "--session-label", "1") == 0  # adds to the same derivatives
    layout = derivative_layout(out)
    assert sorted(layout.get(suffix="mask", return_type="id", target="session")) == ["1", "2"]
    assert validation_errors(out) == []


def test_several_classes_give_a_dseg_with_its_table(tmp_path, raw):
    model = make_model(tmp_path / "m3", classes=3)
    out = tmp_path / "out"
    assert app(raw, out, model, "--save-probabilities", "--desc", "three") == 0
    dseg = out / "sub-01/anat/sub-01_space-orig_desc-three_dseg.nii.gz"
    prob = out / "sub-01/anat/sub-01_space-orig_desc-three_probseg.nii.gz"
    assert dseg.is_file() and voxels(prob).shape[-1] == 3
    table = (out / "desc-three_dseg.tsv").read_text().splitlines()
    assert table == ["index\tname", "0\tbackground", "1\tlesion", "2\trim"]
    # a second model in the same derivatives: its own desc, its own GeneratedBy entry
    assert app(raw, out, make_model(tmp_path / "m2")) == 0
    description = json.loads((out / "dataset_description.json").read_text())
    assert [g["Description"][-12:] for g in description["GeneratedBy"]] == [
        "(desc-three)",
        "rethreshold)",
    ]
    assert len(list(out.rglob("*_mask.nii.gz"))) == 2
    assert validation_errors(out) == []


def test_missing_modality_is_one_clear_line(tmp_path, raw, model, capsys):
    (raw / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz").unlink()
    out = tmp_path / "out"
    assert app(raw, out, model) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "sub-02" in err and "FLAIR" in err and "--channel-map" in err
    assert not out.exists()  # checked before anything is written


def test_existing_outputs_need_overwrite_which_keeps_other_files(tmp_path, raw, model, capsys):
    out = tmp_path / "out"
    assert app(raw, out, model, "--save-probabilities") == 0
    mine = out / "README.md"  # the user's own file in the derivatives
    mine.write_text("mine")
    capsys.readouterr()
    assert app(raw, out, model) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "sub-01" in err
    assert app(raw, out, model, "--overwrite") == 0
    assert mine.read_text() == "mine"
    # the probabilities of the earlier run would no longer match: removed
    assert not list(out.rglob("*_probseg.*")) and len(list(out.rglob("*_mask.nii.gz"))) == 2
    assert validation_errors(out) == []


def test_output_folder_must_not_mix_with_the_raw_data(tmp_path, raw, model, capsys):
    assert app(raw, raw, model) == 2
    assert app(raw, raw / "sub-01" / "out", model) == 2
    assert "derivatives" in capsys.readouterr().err
    assert app(raw, raw / "derivatives", model) == 2  # a pipeline's folder in it, not it
    assert app(raw, tmp_path, model) == 2  # a folder that holds BIDS_DIR
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    assert app(raw, foreign, model) == 2  # not empty and not lesionseg's
    assert sorted(p.name for p in raw.iterdir()) == [  # nothing was written there
        "dataset_description.json",
        "participants.tsv",
        "sub-01",
        "sub-02",
    ]


# ------------------------------------------------------------- matching (plain unit tests)


def image(relpath: str) -> BidsImage:
    """A BidsImage parsed from a name such as ``anat/sub-01_ce-gd_T1w.nii.gz``."""
    datatype, name = relpath.split("/")
    *pairs, suffix = name.removesuffix(".nii.gz").split("_")
    pairs = [p for p in pairs if "-" in p and not p.startswith(("sub-", "ses-"))]
    entities = dict(p.split("-", 1) for p in pairs)
    return BidsImage(Path("/data") / relpath, relpath, suffix, datatype, entities)


IMAGES = [
    image("anat/sub-01_T1w.nii.gz"),
    image("anat/sub-01_ce-gadolinium_T1w.nii.gz"),
    image("anat/sub-01_T2w.nii.gz"),
    image("anat/sub-01_PDw.nii.gz"),
    image("anat/sub-01_FLAIR.nii.gz"),
    image("anat/sub-01_T2starw.nii.gz"),
    image("dwi/sub-01_dwi.nii.gz"),
    image("dwi/sub-01_acq-ADC_dwi.nii.gz"),
]


@pytest.mark.parametrize(
    "channels, expected",
    [
        (["T1", "t1w"], "sub-01_T1w"),
        (["T1c", "T1ce", "T1Gd", "t1-gd", "T1w_ce"], "sub-01_ce-gadolinium_T1w"),
        (["T2", "T2w"], "sub-01_T2w"),
        (["PD", "PDw"], "sub-01_PDw"),
        (["FLAIR", "flair", "T2-FLAIR"], "sub-01_FLAIR"),
        (["DWI", "dwi"], "sub-01_dwi"),
        (["ADC", "adc"], "sub-01_acq-ADC_dwi"),
        (["T2starw"], "sub-01_T2starw"),  # no alias: the suffix of the same name
    ],
)
def test_channel_aliases_match_bids_suffixes(channels, expected):
    for channel in channels:
        found = matching_images(channel_queries(channel), IMAGES)
        assert [f.path.name for f in found] == [f"{expected}.nii.gz"], channel


def test_adc_also_matches_a_converter_suffix_and_channel_map_overrides():
    converted = image("dwi/sub-01_dwi_ADC.nii.gz")
    assert matching_images(channel_queries("ADC"), [IMAGES[6], converted]) == [converted]
    mapping = parse_channel_map(["T1c=ce-gadolinium_T1w", "Gd=ce-gadolinium_T1w"])
    assert matching_images(channel_queries("Gd", mapping), IMAGES) == [IMAGES[1]]
    for bad in ["T1c", "T1c=", "T1c=ce_gd_T1w", "T1c=foo-x_T1w", "T1c=T1w!"]:
        with pytest.raises(LesionsegError, match="--channel-map"):
            parse_channel_map([bad])


def test_runs_pick_the_last_and_other_differences_are_an_error():
    runs = [image("anat/sub-01_run-1_FLAIR.nii.gz"), image("anat/sub-01_run-2_FLAIR.nii.gz")]
    chosen, notes = match_channels(Visit("01"), ["FLAIR"], runs)
    assert chosen["FLAIR"] is runs[1] and "run-2" in notes[0] and "sub-01" in notes[0]
    acqs = [image("anat/sub-01_acq-a_FLAIR.nii.gz"), image("anat/sub-01_acq-b_FLAIR.nii.gz")]
    with pytest.raises(LesionsegError, match=r"sub-01 ses-2: 2 images .*differ in acq"):
        match_channels(Visit("01", "2"), ["FLAIR"], acqs)
    with pytest.raises(LesionsegError, match="sub-01: no image for the model's channel T1c"):
        match_channels(Visit("01"), ["T1c"], [IMAGES[0]])


def test_labels_and_method_names():
    assert strip_labels(["sub-01", "02"], "sub", "--participant-label") == ["01", "02"]
    with pytest.raises(LesionsegError, match="--session-label"):
        strip_labels(["ses-1_x"], "ses", "--session-label")
    assert method_label("msseg-paper", "gated", "m") == "mssegpapergated"
    assert method_label(None, None, "my_model") == "mymodel"


def test_shards_segment_each_subject_once(tmp_path, raw, model):
    out = tmp_path / "out"
    assert app(raw, out, model, "--shard", "1/2") == 0
    first = sorted(p.name for p in out.glob("sub-*"))
    assert app(raw, out, model, "--shard", "2/2") == 0  # adds its share, replaces nothing
    every = sorted(p.name for p in out.glob("sub-*"))
    assert first and len(first) < len(every)
    assert every == sorted(p.name for p in raw.glob("sub-*"))
    assert app(raw, tmp_path / "x", model, "--shard", "3/2") == 2


def test_app_takes_the_precision_of_predict(tmp_path, raw, model):
    out = tmp_path / "out"
    speed = ["--precision", "bf16", "--layout", "channels_last"]
    assert app(raw, out, model, "--save-probabilities", *speed) == 0
    (prob,) = derivative_layout(out).get(subject="01", suffix="probseg", extension=".nii.gz")
    anat = raw / "sub-01" / "anat"
    inputs = [f"FLAIR={anat / 'sub-01_FLAIR.nii.gz'}", f"T1={anat / 'sub-01_T1w.nii.gz'}"]
    pred = tmp_path / "pred"
    args = ["predict", "-m", str(model), "-i", *inputs, "-o", str(pred), "--device", "cpu"]
    assert main([*args, *speed, "--save-probabilities", "--quiet", "--name", "s1"]) == 0
    bf16 = voxels(Path(prob.path))
    np.testing.assert_array_equal(bf16, voxels(pred / "s1_prob.nii.gz")[..., 1])
    fp32 = tmp_path / "fp32"
    args[args.index(str(pred))] = str(fp32)
    assert main([*args, "--save-probabilities", "--quiet", "--name", "s1"]) == 0
    assert not np.array_equal(bf16, voxels(fp32 / "s1_prob.nii.gz")[..., 1])  # bf16 ran
