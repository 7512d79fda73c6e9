"""``lesionseg export``: ONNX files whose outputs equal PyTorch's (issue #17)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lesionseg.cli.main import main
from lesionseg.inference.method import write_method
from lesionseg.models import MODELS
from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.models.io import save_model
from tests.models.test_model_contract import SMALL


def _folder(tmp_path, name, channels=("T1",)):
    options = SMALL.get(name, {})
    model = build_model(ModelSpec(name, options), len(channels), 2, seed=0)
    config = {
        "recipe": {"name": f"test-{name}", "model": {"name": name, **options}, "predict": {}},
        "channel_names": list(channels),
        "labels": {"0": "background", "1": "lesion"},
        "preprocess": {"normalize": "zscore"},
        "network": "main",
    }
    save_model(model, config, tmp_path / name)
    return tmp_path / name, model


@pytest.mark.parametrize("name", MODELS.names())
def test_onnxruntime_gives_pytorchs_outputs(tmp_path, name):
    folder, model = _folder(tmp_path, name)
    out = tmp_path / f"{name}.onnx"
    assert main(["export", str(folder), "-o", str(out), "--size", "8"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape  # ["batch", C, *size]
    x = torch.randn(3, *shape[1:])  # another batch than the export's
    model.eval()
    copy = getattr(model, "inference_copy", None)
    net = copy() if callable(copy) else model
    with torch.no_grad():
        expected = net(x)
    expected = expected[0] if isinstance(expected, tuple | list) else expected
    got = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    config = json.loads(meta["lesionseg_config"])
    assert config["channel_names"] == ["T1"] and config["preprocess"]["normalize"] == "zscore"
    assert json.loads(meta["lesionseg_geometry"])["input_shape"][1:] == shape[1:]


def test_a_method_of_several_networks_exports_the_one_asked_for(tmp_path, capsys):
    folder, _ = _folder(tmp_path, "patch-cnn")
    (folder / "networks").mkdir()
    second, _ = _folder(folder / "networks", "patch-cnn")
    write_method(folder, {"combine": "product", "inputs": ["main", "second"]},
                 {"main": ".", "second": "networks/patch-cnn"})  # fmt: skip
    out = tmp_path / "m.onnx"
    assert main(["export", str(folder), "-o", str(out)]) == 2
    assert "--network" in capsys.readouterr().err
    assert main(["export", str(folder), "-o", str(out), "--network", "second"]) == 0
    assert main(["export", str(folder), "-o", str(out), "--network", "second"]) == 2  # exists
    assert main(["export", str(folder), "-o", str(tmp_path / "x.onnx"), "--network", "z"]) == 2
