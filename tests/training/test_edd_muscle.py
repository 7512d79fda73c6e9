"""The EDD + MUSCLE recipe end to end on a tiny DWI + ADC data set (EDD reads DWI only)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from safetensors.torch import load_file

from lesionseg.cli.main import main
from lesionseg.inference.combine import bayes_fusion
from lesionseg.postprocess.components import small_components
from lesionseg.training.recipe import load_recipe
from tests.training.conftest import (
    kill_resume_and_compare,
    train_single_threaded,
    write_toy_dataset,
)

CONTRASTS = {"DWI": 60.0, "ADC": -30.0}
SMALL = [
    "--set", "model.widths=[4, 8, 8]", "--set", "sampler.size=16",
    "--set", "train.batch_size=8", "--set", "train.batches_per_epoch=6",
    "--set", "stages.0.epochs=4",
    "--set", "stages.2.model.widths=[4, 8]", "--set", "stages.2.model.hidden=[8, 8]",
    "--set", "stages.2.epochs=3", "--set", "stages.2.batch_size=4",
]  # fmt: skip


@pytest.fixture(scope="module")
def dwi_toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("dwi") / "toy", contrasts=CONTRASTS)


@pytest.fixture(scope="module")
def edd_muscle(dwi_toy, tmp_path_factory):
    return train_single_threaded(
        "edd-muscle-tiny", dwi_toy, tmp_path_factory.mktemp("edd_muscle"), SMALL
    )


def test_recipes_keep_the_papers_values():
    paper = load_recipe("edd-muscle-paper")
    edd, maps, muscle = paper.stages()
    assert paper.data["channels"] == ["DWI"]
    assert paper.data["preprocess"]["target_spacing"] == [1.6, 1.6, None]
    assert edd["optimizer"] == {
        "name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0
    }  # fmt: skip
    assert edd["loss"]["weights"] == [1, 1, 1, 1] and edd["sampler"]["size"] == 64
    assert edd["sampler"]["lesion_position"] == "uniform"
    assert edd["sampler"]["lesion_draw"] == "pixel"
    assert maps["kind"] == "predict"
    assert muscle["model"]["options"]["scales"] == [16, 24, 32]
    assert muscle["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0}
    assert muscle["batch_size"] == 100 and muscle["sampler"]["max_size"] == 60
    graph = paper.data["predict"]["graph"]
    assert graph["combine"] == "rescore-components" and graph["max_size"] == 60
    assert paper.data["predict"]["variants"]["edd-only"]["graph"] == "edd"


def test_both_stages_train_and_edd_reads_dwi_only(edd_muscle):
    rows = [r.split(",") for r in (edd_muscle / "log.csv").read_text().splitlines()]
    networks = [r[rows[0].index("network")] for r in rows[1:]]
    assert networks == ["edd"] * 4 + ["muscle"] * 3
    for folder in (edd_muscle / "networks" / "edd", edd_muscle):
        config = json.loads((folder / "config.json").read_text())
        assert config["channel_names"] == ["DWI"]
        assert config["data_channel_names"] == ["DWI", "ADC"]
    weights = load_file(str(edd_muscle / "networks" / "edd" / "model.safetensors"))
    first = next(k for k in weights if k.endswith("encoder1.0.0.weight"))
    assert weights[first].shape[1] == 1  # one input channel: DWI


def test_predict_fuses_small_components_and_keeps_the_rest(edd_muscle, dwi_toy, tmp_path):
    fused_dir, edd_dir = tmp_path / "fused", tmp_path / "edd"
    argv = ["predict", "-m", str(edd_muscle), "-i", str(dwi_toy), "--all", "--save-probabilities"]
    assert main([*argv, "-o", str(fused_dir)]) == 0
    assert main([*argv, "-o", str(edd_dir), "--variant", "edd-only"]) == 0
    checked = 0
    for image in sorted((dwi_toy / "imagesTr").glob("*_0000.nii.gz")):
        case = image.name.replace("_0000.nii.gz", "")
        source = nib.load(str(image))
        fused_img = nib.load(str(fused_dir / f"{case}_prob.nii.gz"))
        # on the input grid
        assert fused_img.shape[:3] == source.shape
        np.testing.assert_allclose(fused_img.affine, source.affine)
        fused = fused_img.get_fdata()[..., 1]
        p = nib.load(str(edd_dir / f"{case}_prob.nii.gz")).get_fdata()[..., 1]
        ids, small, _ = small_components(p > 0.5, 60, 2, 8)
        rescored = np.isin(ids, small)
        # everything but the small components keeps EDD's probability
        np.testing.assert_allclose(fused[~rescored], p[~rescored], atol=1e-5)
        for number in small:  # each small component: p fused with one q by Bayes' rule
            voxel = ids == number
            pv, fv = p[voxel], fused[voxel]
            # the q that turns p into the fused value, back from the fusion formula
            q = fv * (1 - pv) / (pv * (1 - fv) + fv * (1 - pv))
            np.testing.assert_allclose(bayes_fusion(pv, q[0]), fv, atol=1e-4)
            checked += 1
        labels = nib.load(str(fused_dir / f"{case}_seg.nii.gz")).get_fdata()
        np.testing.assert_array_equal(labels, fused > 0.5)
    assert checked > 0  # the toy's spheres give small components to re-score


def test_sigkill_in_the_muscle_stage_then_resume_is_exact(dwi_toy, edd_muscle, tmp_path):
    # stages: edd, edd-maps, muscle (killed after one epoch of the third)
    files = ("model.safetensors", "networks/edd/model.safetensors")
    kill_resume_and_compare("edd-muscle-tiny", dwi_toy, SMALL, edd_muscle, tmp_path, 2, files)


def test_paper_resampling_is_in_plane_only(dwi_toy):
    from lesionseg.data.dataset import load_dataset
    from lesionseg.preprocess import PreprocessConfig, preprocess_subject

    recipe = load_recipe("edd-muscle-paper")
    data = load_dataset(dwi_toy).select_channels(recipe.data["channels"])
    config = PreprocessConfig.from_dict(recipe.data["preprocess"])
    pre = preprocess_subject(data.subjects[0], data.channel_names, config)
    source = nib.load(str(data.subjects[0].channels["DWI"]))  # 20³ voxels of 2 mm
    assert pre.image.shape[0] == 1 and pre.image.shape[3] == source.shape[2]  # every slice
    assert pre.spacing[2] == pytest.approx(2.0)
    assert pre.spacing[:2] == pytest.approx((1.6, 1.6), abs=0.05)
