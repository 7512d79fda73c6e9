from pathlib import Path

import numpy as np
import pytest

from lesionseg.cli.main import main
from lesionseg.data.dataset import load_dataset, subject_from_files
from lesionseg.errors import LesionsegError
from lesionseg.preprocess import open_cache, preprocess_dataset


def test_msd_and_csv_load_the_same_subjects(msd_dataset, csv_manifest):
    a = load_dataset(msd_dataset)
    b = load_dataset(csv_manifest)
    assert a.channel_names == b.channel_names == ["T1", "FLAIR"]
    assert a.labels == b.labels == {0: "background", 1: "lesion"}
    assert [(s.id, s.split) for s in a] == [(s.id, s.split) for s in b]
    for sa, sb in zip(a, b):
        assert {k: v.resolve() for k, v in sa.channels.items()} == {
            k: v.resolve() for k, v in sb.channels.items()
        }
        assert (sa.label and sa.label.resolve()) == (sb.label and sb.label.resolve())


def test_manifest_errors(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("id,T1\nx,a.nii.gz\n")
    with pytest.raises(LesionsegError, match="'subject' column"):
        load_dataset(bad)
    bad.write_text("subject,T1\nx,a.nii.gz\nx,b.nii.gz\n")
    with pytest.raises(LesionsegError, match="appears twice"):
        load_dataset(bad)


def test_subject_from_files_names_channels(tmp_path):
    s = subject_from_files(["t1.nii.gz", "flair.nii.gz"], ["T1", "FLAIR"])
    assert list(s.channels) == ["T1", "FLAIR"] and s.id == "t1"
    s = subject_from_files(["FLAIR=f.nii.gz", "T1=t.nii.gz"])
    assert s.channels["T1"].name == "t.nii.gz"


def test_cache_is_memory_mapped_and_skips_unchanged(msd_dataset, tmp_path):
    ds = load_dataset(msd_dataset)
    cache = preprocess_dataset(ds, tmp_path / "cache", progress=False)
    assert cache.newly_written == 3
    subject = cache.subject("case_000")
    assert isinstance(subject.image, np.memmap) and subject.image.shape[0] == 2
    assert subject.label is not None and cache.subject("case_002").label is None
    again = preprocess_dataset(ds, tmp_path / "cache", progress=False)
    assert again.newly_written == 0
    # touching an input re-processes that subject only
    path = ds.subjects[1].channels["T1"]
    path.write_bytes(path.read_bytes())
    import os

    os.utime(path, ns=(1, 1))
    third = preprocess_dataset(ds, tmp_path / "cache", progress=False)
    assert third.newly_written == 1
    reopened = open_cache(tmp_path / "cache")
    np.testing.assert_array_equal(reopened.subject("case_000").mask, subject.mask)


def test_info_on_file_and_dataset(msd_dataset, capsys):
    assert main(["info", str(msd_dataset / "labelsTr" / "case_000.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "lesions:      1 connected" in out and "lesion volume" in out
    assert main(["info", str(msd_dataset)]) == 0
    out = capsys.readouterr().out
    assert "channels:     T1, FLAIR" in out and "case_002" in out and "2 train, 1 test" in out
    assert main(["info", str(msd_dataset / "imagesTr" / "case_000_0000.nii.gz")]) == 0
    assert "intensities" in capsys.readouterr().out


def test_every_command_has_help(capsys):
    from lesionseg.cli.main import _command_modules

    for module in _command_modules():
        with pytest.raises(SystemExit) as exit_info:
            main([module.NAME, "--help"])
        assert exit_info.value.code == 0
        assert "usage: lesionseg " + module.NAME in capsys.readouterr().out


def test_monai_reads_a_synthesised_data_set(tmp_path):
    """MONAI's Decathlon loaders accept lesionseg's dataset.json (issue #15)."""
    from monai.data import load_decathlon_datalist, load_decathlon_properties

    from lesionseg.cli.main import main
    from lesionseg.data.dataset import load_dataset

    root = tmp_path / "ms"
    argv = ["synth", "ms", "-o", str(root), "--subjects", "3", "--spacing", "6"]
    assert main([*argv, "--test-fraction", "0.34"]) == 0
    spec = root / "dataset.json"
    training = load_decathlon_datalist(str(spec), True, "training")
    test = load_decathlon_datalist(str(spec), True, "test")
    ours = load_dataset(root)
    assert [len(t["image"]) for t in training] == [4, 4] and len(test) == 1
    for item, subject in zip(training, ours.split("train")):
        assert [Path(p) for p in item["image"]] == list(subject.channels.values())
        assert Path(item["label"]) == subject.label
        assert all(Path(p).is_file() for p in [*item["image"], item["label"]])
    assert [Path(p) for p in test[0]["image"]] == list(ours.split("test")[0].channels.values())
    properties = load_decathlon_properties(str(spec), ["name", "modality", "labels", "numTraining"])
    assert properties["modality"] == {"0": "T1", "1": "T2", "2": "PD", "3": "FLAIR"}
    assert properties["numTraining"] == 2


def test_a_decathlon_v1_data_set_reads_as_its_nnunet_v2_copy(tmp_path):
    """MSD v1: 4D images (channel = volume), ``modality``, ``training``/``test`` lists."""
    import json

    import nibabel as nib

    from lesionseg.data.dataset import load_dataset
    from lesionseg.preprocess import PreprocessConfig, preprocess_subject
    from tests.safety.builders import msd

    v2 = msd(tmp_path / "v2", n_train=2, n_test=1, channels=("FLAIR", "T1"))
    v1 = tmp_path / "v1"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (v1 / folder).mkdir(parents=True)
    training, test = [], []
    for subject in load_dataset(v2):
        images = [nib.load(str(p)) for p in subject.channels.values()]
        stacked = np.stack([np.asarray(i.dataobj) for i in images], axis=-1)
        folder = "imagesTr" if subject.split == "train" else "imagesTs"
        image = f"./{folder}/{subject.id}.nii.gz"
        nib.save(nib.Nifti1Image(stacked, images[0].affine), str(v1 / image))
        if subject.split == "train":
            label = f"./labelsTr/{subject.id}.nii.gz"
            (v1 / label).write_bytes(subject.label.read_bytes())
            training.append({"image": image, "label": label})
        else:
            test.append(image)
    spec = {
        "name": "tiny", "modality": {"0": "FLAIR", "1": "T1"},
        "labels": {"0": "background", "1": "lesion"}, "numTraining": 2, "numTest": 1,
        "training": training, "test": test,
    }  # fmt: skip
    (v1 / "dataset.json").write_text(json.dumps(spec))
    a, b = load_dataset(v2), load_dataset(v1)
    assert (b.channel_names, b.labels) == (a.channel_names, a.labels)
    assert [(s.id, s.split) for s in b] == [(s.id, s.split) for s in a]
    assert b.subjects[0].volumes == {"FLAIR": 0, "T1": 1}
    config = PreprocessConfig.from_dict({})
    for x, y in zip(a, b):  # the same voxels, channel by channel
        pa = preprocess_subject(x, ["T1", "FLAIR"], config)
        pb = preprocess_subject(y, ["T1", "FLAIR"], config)
        np.testing.assert_array_equal(pa.image, pb.image)
        if x.label is not None:
            np.testing.assert_array_equal(pa.label, pb.label)


def test_info_reads_probability_maps_and_plain_folders(tmp_path, capsys):
    import nibabel as nib

    from lesionseg.cli.main import main

    fg = np.zeros((6, 5, 4), np.float32)
    fg[1:3, 1:3, 1:3] = 0.9  # 8 voxels where the lesion is the most probable class
    (tmp_path / "pred").mkdir()
    prob = tmp_path / "pred" / "case_prob.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([1 - fg, fg], -1), np.eye(4)), str(prob))
    nib.save(nib.Nifti1Image((fg > 0.5).astype(np.uint8), np.eye(4)), str(prob.parent / "c.nii"))
    assert main(["info", str(prob)]) == 0
    out = capsys.readouterr().out
    assert "6 × 5 × 4 × 2 volumes" in out and "2 class probability maps" in out
    assert "volume 1:" in out and "most probable in 8 voxels" in out
    assert main(["info", str(prob.parent)]) == 0
    out = capsys.readouterr().out
    assert "2 NIfTI file(s), no dataset.json" in out and "case_prob.nii.gz: 6 × 5 × 4 × 2" in out
