"""Slice-based models end to end through the shared engine: train, then ``lesionseg predict``.

The same two commands as for DeepMedic; outputs must land on each input's own grid.
"""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from lesionseg.cli.main import main
from lesionseg.data.dataset import load_dataset
from lesionseg.inference.predictor import predict_volume
from lesionseg.models.io import load_model
from lesionseg.preprocess import PreprocessConfig, preprocess_subject
from lesionseg.sampling.slices import slice_stack
from lesionseg.training import available_recipes, load_recipe


def _set(*pairs):
    return [arg for pair in pairs for arg in ("--set", pair)]


# 16x16 slices, three levels of 4-16 filters: a training step takes milliseconds.
TINY = _set(
    "preprocess.target_shape=[16, 16, null]",
    "sampler.size=[16, 16]",
    "train.batch_size=4",
    "train.batches_per_epoch=3",
    "train.workers=0",
    "validation.cases=1",
    "validation.every=1",
)
MODELS = {
    "dunet-tiny": _set("model.features=[4, 8, 16]"),
    "unet2d-tiny": _set("model.features=[4, 8, 16]"),
    "unet3d-paper": _set("model.features=[4, 8]", "model.head_features=4", "optimizer.lr=0.01"),
}


def _train(recipe, dataset, tmp_path, *extra):
    model_dir = tmp_path / "model"
    args = ["train", recipe, "-d", str(dataset), "-o", str(model_dir), "--quiet", "--device"]
    args += ["cpu", "--cache", str(tmp_path / "cache"), "--epochs", "1", *TINY, *MODELS[recipe]]
    assert main([*args, *extra]) == 0
    return model_dir


@pytest.mark.parametrize("recipe", sorted(MODELS))
def test_train_then_predict_on_the_input_grid(recipe, toy_dataset, tmp_path):
    model_dir, out = _train(recipe, toy_dataset, tmp_path), tmp_path / "pred"
    config = json.loads((model_dir / "config.json").read_text())
    assert 0.0 <= config["validation_dice"] <= 1.0  # validation ran on the sigmoid output
    assert (
        main(["predict", "-m", str(model_dir), "-i", str(toy_dataset), "-o", str(out), "--all"])
        == 0
    )
    dataset = load_dataset(toy_dataset)
    model, config = load_model(model_dir)
    assert model.geometry.spatial_dims == 2
    for subject in dataset.subjects:
        source = nib.load(str(subject.channels["A"]))
        written = nib.load(str(out / f"{subject.id}_seg.nii.gz"))
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        labels = np.asarray(written.dataobj)
        assert set(np.unique(labels)) <= {0, 1}
        # the same prediction composed by hand: preprocess (16x16 slices), predict slice by
        # slice, resize the probabilities back (linear), threshold at 0.5
        pre = preprocess_subject(
            subject, dataset.channel_names, PreprocessConfig.from_dict(config["preprocess"])
        )
        assert pre.image.shape[1:3] == (16, 16)
        probs = predict_volume(model, pre.image, mask=pre.mask)
        back = pre.record.invert(probs, is_label=False, fill=[1.0, 0.0])
        assert back.shape == (*source.shape, 2)
        np.testing.assert_array_equal(labels, back[..., 1] > back[..., 0])


def test_predictor_sees_the_stacks_the_sampler_trains_on(toy_dataset, tmp_path):
    """A slice's probabilities from the volume predictor equal the model on the sampler's stack."""
    model_dir = _train("dunet-tiny", toy_dataset, tmp_path, *_set("validation.cases=0"))
    model, config = load_model(model_dir)
    dataset = load_dataset(toy_dataset)
    pre = preprocess_subject(
        dataset.subjects[0], dataset.channel_names, PreprocessConfig.from_dict(config["preprocess"])
    )
    probs = predict_volume(model, pre.image)  # no mask: every slice is predicted
    depth = pre.image.shape[3]
    model.eval()
    with torch.no_grad():
        for i in (0, 1, depth // 2, depth - 1):  # the first two and the last need zero padding
            stack = slice_stack(pre.image, i, 2, model.geometry.slice_context)
            p = torch.sigmoid(model(torch.from_numpy(stack[None])))[0, 0].numpy()
            np.testing.assert_allclose(probs[1, :, :, i], p, atol=1e-5)


def test_slice_recipes_validate_and_keep_paper_values():
    names = {
        "dunet-paper",
        "unet2d-paper",
        "unet3d-paper",
        "dunet-tiny",
        "unet2d-tiny",
        "dunet-demo",
    }
    assert names <= set(available_recipes())
    paper = load_recipe("dunet-paper").data
    assert paper["model"]["options"]["variant"] == "SEAdd-23"
    assert paper["preprocess"]["target_shape"] == [192, 192, None]
    stage = paper["stages"][0]
    assert stage["loss"] == {"name": "enhanced_mixing", "alpha": 0.48, "gamma": 1.1}
    assert stage["optimizer"]["name"] == "adam" and stage["optimizer"]["lr"] == 1e-6
    assert stage["batch_size"] == 36 and stage["epochs"] == 150
    assert stage["sampler"]["name"] == "slices"
    # the last model is the result (select: last), whatever validation says
    assert stage["select"] == "last"
    assert stage["early_stopping"] is None
    for baseline in ("unet2d-paper", "unet3d-paper"):  # trained as the D-UNet (Table 2)
        data = load_recipe(baseline).data
        assert data["stages"][0]["optimizer"] == stage["optimizer"]
        assert data["stages"][0]["epochs"] == 150
        assert data["validation"] == paper["validation"]
    assert load_recipe("unet3d-paper").data["stages"][0]["batch_size"] == 6
    for name in names:
        assert load_recipe(name).data["sampler"]["axis"] == 2


class _Threshold(torch.nn.Module):
    """A one-map sigmoid 2D "model": lesion wherever the centre slice is positive."""

    def __init__(self):
        super().__init__()
        from lesionseg.models.geometry import ModelGeometry

        self.geometry = ModelGeometry(
            spatial_dims=2,
            in_channels=1,
            num_classes=1,
            slice_context=(2, 1),
            output_activation="sigmoid",
        )

    def forward(self, x):
        return torch.where(x[:, 2:3] > 0, 10.0, -10.0)


def test_validation_scores_the_foreground_of_sigmoid_models():
    from lesionseg.sampling import ArraySubject
    from lesionseg.training.validation import validate

    rng = np.random.default_rng(0)
    label = (rng.random((8, 8, 6)) > 0.8).astype(np.uint8)
    image = np.where(label > 0, 1.0, -1.0).astype(np.float32)[None]
    subject = ArraySubject("a", image, label, np.ones_like(label))
    dice, per_case = validate(_Threshold(), [subject], classes=[1])
    assert dice == pytest.approx(1.0) and per_case == {"a": pytest.approx(1.0)}
    inverted = ArraySubject("b", -image, label, np.ones_like(label))
    assert validate(_Threshold(), [inverted], classes=[1])[0] == pytest.approx(0.0)


def test_predict_slices_along_the_axis_the_model_was_trained_on(toy_dataset, tmp_path):
    # slices drawn along axis 0: in-plane axes are then (Y, Z)
    model_dir = _train(
        "unet2d-tiny",
        toy_dataset,
        tmp_path,
        *_set("sampler.axis=0", "preprocess.target_shape=[null, 16, 16]"),
    )
    config = json.loads((model_dir / "config.json").read_text())
    assert config["slice_axis"] == 0
    out = tmp_path / "pred"
    args = ["predict", "-m", str(model_dir), "-i", str(toy_dataset), "-o", str(out), "--all"]
    assert main([*args, "--save-probabilities"]) == 0
    dataset = load_dataset(toy_dataset)
    model, config = load_model(model_dir)
    subject = dataset.subjects[0]
    pre = preprocess_subject(
        subject, dataset.channel_names, PreprocessConfig.from_dict(config["preprocess"])
    )
    along_0 = pre.record.invert(predict_volume(model, pre.image, mask=pre.mask, axis=0))
    written = np.asarray(nib.load(str(out / f"{subject.id}_prob.nii.gz")).dataobj)
    np.testing.assert_allclose(written, along_0, atol=1e-5)


def test_paper_validation_keeps_the_last_model(toy_dataset, tmp_path):
    """dunet-paper's stage (select: last) leaves the last model at the root, validated."""
    select = load_recipe("dunet-paper").data["stages"][0]["select"]
    model_dir = _train(
        "dunet-tiny",
        toy_dataset,
        tmp_path,
        *_set(
            "validation.cases=1", "validation.every=1", f"stages=[{{name: main, select: {select}}}]"
        ),
        "--epochs",
        "3",
    )
    log = (model_dir / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    val_dice = [row.split(",")[header.index("val_dice")] for row in log[1:]]
    assert len(val_dice) == 3 and all(v != "" for v in val_dice)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["epoch"] == 3
    root, last = (
        load_model(model_dir)[0].state_dict(),
        load_model(model_dir / "last")[0].state_dict(),
    )
    assert root.keys() == last.keys()
    for key in root:
        torch.testing.assert_close(root[key], last[key], rtol=0, atol=0)
