import pytest

from lesionseg.cli.main import main


def test_describe_paper_recipe(capsys):
    assert main(["describe", "deepmedic-paper", "--channels", "4", "--classes", "5"]) == 0
    out = capsys.readouterr().out
    assert "663,163 (PyTorch)" in out  # SPECS.md §1, derived count
    assert "receptive field: 17" in out and "subsampled_x3: 51" in out
    assert "input 4 × 57×57×57 → output 9×9×9" in out
    assert "normal pathway input: 25×25×25" in out and "pathway input: 19×19×19" in out
    assert "normal.layers.0.conv" in out  # the layer table


@pytest.mark.parametrize(
    "recipe, count",
    [
        ("deepmedic-paper", "663,163 (PyTorch)"),  # 4 channels, 5 classes (BRATS)
        ("msseg-paper", "715,234 (PyTorch)"),  # FLAIR, PD, T2, T1
        ("brainsegnet-brats", "11,930,117 (PyTorch)"),  # 4 channels, 5 classes
        ("dunet-paper", "8,640,163 (Keras"),  # T1
        ("edd-muscle-paper", "3,223,212 (PyTorch)"),  # channels: [DWI]
    ],
)
def test_describe_builds_a_recipe_for_its_own_data(recipe, count, capsys):
    assert main(["describe", recipe, "--no-layers"]) == 0
    assert count in capsys.readouterr().out


def test_train_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "no-such-recipe", "-d", str(tmp_path), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-recipe" in err
    assert main(["train", "deepmedic-tiny"]) == 2
    assert "missing -d/--dataset, -o/--output" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a training folder" in capsys.readouterr().err
