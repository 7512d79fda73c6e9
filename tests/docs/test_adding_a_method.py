"""docs/adding-a-method.md runs as written: its Python blocks in order, its recipe as a file."""

from __future__ import annotations

import re
from pathlib import Path

from lesionseg.inference.combine import COMBINERS
from lesionseg.models import MODELS
from tests.training.conftest import write_toy_dataset

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-a-method.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def test_the_walk_through_runs(tmp_path, monkeypatch, capsys):
    blocks = BLOCK.findall(DOC.read_text())
    assert [lang for lang, _ in blocks].count("python") >= 3
    monkeypatch.chdir(tmp_path)
    write_toy_dataset(tmp_path / "data" / "toy")
    namespace: dict = {}
    with MODELS.scope(), COMBINERS.scope():
        for lang, code in blocks:
            if lang == "yaml":
                name = code.splitlines()[0].lstrip("# ").strip()
                (tmp_path / name).write_text(code)
            elif lang == "python":
                exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
    assert "patch-mlp" not in MODELS and "max" not in COMBINERS  # the scope undid them
    segmentation = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert segmentation.is_file() and segmentation.name.endswith("_seg.nii.gz")
    assert (
        tmp_path / "models" / "my-method" / "networks" / "first" / "model.safetensors"
    ).is_file()
