"""The one delete and the one overwrite rule (points 1, 2, 7 of the safety issue)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lesionseg.cli.main import main
from lesionseg.data.ownership import (
    MARKER_NAME,
    TEMP_PREFIX,
    clean_temporaries,
    mark,
    owner_kind,
    prepare_output_folder,
    remove_owned,
)
from lesionseg.errors import LesionsegError
from tests.safety.builders import MANIFEST_HEADER, manifest, manifest_row, msd
from tests.safety.harness import snapshot


def test_remove_owned_refuses_dot_dot_and_dot(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    mark(root, "cache")
    (tmp_path / "precious.txt").write_text("keep")
    for bad in ("..", ".", "../precious.txt", "/etc"):
        with pytest.raises(LesionsegError, match="not inside this folder"):
            remove_owned(root / bad, root)
    assert (tmp_path / "precious.txt").read_text() == "keep"
    assert root.is_dir()


def test_remove_owned_refuses_folders_lesionseg_did_not_write(tmp_path):
    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    with pytest.raises(LesionsegError, match="did not write"):
        remove_owned(user / "sub", user)
    assert (user / "sub").is_dir()


def test_remove_owned_removes_a_link_not_its_target(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    mark(root, "model")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("keep")
    (root / "link").symlink_to(outside, target_is_directory=True)
    remove_owned(root / "link", root)
    assert not (root / "link").exists() and (outside / "data.txt").read_text() == "keep"
    # a path that reaches out of root through a link is refused
    (root / "link2").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LesionsegError, match="not inside"):
        remove_owned(root / "link2" / "data.txt", root)
    assert (outside / "data.txt").is_file()


def test_overwrite_replaces_only_what_lesionseg_wrote(tmp_path):
    folder = tmp_path / "model"
    prepare_output_folder(folder, "model", overwrite=False, owned=("config.json", "last"))
    (folder / "config.json").write_text("{}")
    (folder / "last").mkdir()
    (folder / "last" / "x").write_text("old")
    (folder / "my-notes.txt").write_text("mine")
    with pytest.raises(LesionsegError, match="--overwrite"):
        prepare_output_folder(folder, "model", overwrite=False, owned=("config.json", "last"))
    prepare_output_folder(folder, "model", overwrite=True, owned=("config.json", "last"))
    assert sorted(p.name for p in folder.iterdir()) == [MARKER_NAME, "my-notes.txt"]
    assert json.loads((folder / MARKER_NAME).read_text())["kind"] == "model"


def test_overwrite_refuses_a_folder_of_another_kind(tmp_path):
    folder = tmp_path / "cache"
    prepare_output_folder(folder, "cache", overwrite=False, reusable=True)
    (folder / "case").mkdir()
    with pytest.raises(LesionsegError, match="lesionseg cache folder"):
        prepare_output_folder(folder, "model", overwrite=True, owned=("case",))
    assert (folder / "case").is_dir()


def test_temporaries_in_subfolders_are_cleaned_when_asked(tmp_path):
    folder = tmp_path / "model"
    (folder / "last").mkdir(parents=True)
    (folder / "last" / f"{TEMP_PREFIX}model.x.safetensors").write_bytes(b"half")
    (folder / "last" / "model.safetensors").write_bytes(b"whole")
    assert clean_temporaries(folder) == 0  # top level only by default
    assert clean_temporaries(folder, recursive=True) == 1
    assert [p.name for p in (folder / "last").iterdir()] == ["model.safetensors"]


def test_temporaries_of_a_killed_run_are_cleaned(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / f"{TEMP_PREFIX}case.abc.nii.gz").write_bytes(b"half")
    (folder / f"{TEMP_PREFIX}case.dir").mkdir()
    (folder / ".hidden-user-file").write_text("keep")
    assert clean_temporaries(folder) == 2
    assert [p.name for p in folder.iterdir()] == [".hidden-user-file"]


@pytest.mark.parametrize("sid", ["..", ".", "../escape", "/abs", "a/b"])
def test_bad_subject_ids_never_delete_outside_the_cache(tmp_path, capsys, sid):
    """Today's bug: an id of '..' made preprocess rmtree the cache's parent."""
    root = tmp_path / "data"
    text = "\n".join([MANIFEST_HEADER, manifest_row(sid, 0), manifest_row("ok", 1)]) + "\n"
    csv = manifest(root, text)
    before = snapshot(tmp_path, tmp_path / "out" / "cache")
    code = main(["preprocess", str(csv), "-o", str(tmp_path / "out" / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "manifest.csv" in err
    assert snapshot(tmp_path, tmp_path / "out" / "cache") == before


@pytest.mark.parametrize("target", ["dataset", "parent"])
def test_train_overwrite_never_deletes_the_dataset(tmp_path, capsys, target):
    """Today's bug: train -o DATASET --overwrite deleted 38 files of the data set."""
    ds = msd(tmp_path / "top" / "ds")
    out = ds if target == "dataset" else ds.parent
    before = snapshot(tmp_path)
    code = main(["train", "deepmedic-tiny", "-d", str(ds), "-o", str(out), "--overwrite"])
    assert code == 2 and "holds the input" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_model_folder_never_runs_code(tmp_path, capsys):
    """Today's bug: describe MODEL_DIR imported the modules named in the saved recipe."""
    from tests.safety.builders import model_folder

    (tmp_path / "evilmod.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('PWNED').write_text('ran')\n"
    )

    def add_import(config):
        config["recipe"]["imports"] = ["evilmod"]
        return config

    model = model_folder(tmp_path / "model", config_edit=add_import)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for argv in (["describe", str(model)], ["predict", "-m", str(model), "-i", "x", "-o", "o"]):
        result = subprocess.run(
            [sys.executable, "-m", "lesionseg", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2, result.stderr
        assert not (tmp_path / "PWNED").exists()


def test_plugins_come_from_installed_entry_points(monkeypatch):
    """Own parts are registered through the entry-point group, the Python plugin convention."""
    from importlib import metadata

    from lesionseg.training import recipe as recipe_module

    loaded = []

    class FakeEntryPoint:
        name, value = "my-parts", "my_package.parts"

        def load(self):
            loaded.append(self.value)

    def fake_entry_points(group):
        return [FakeEntryPoint()] if group == recipe_module.PLUGIN_GROUP else []

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    recipe_module.import_parts()
    assert loaded == ["my_package.parts"]

    class Broken(FakeEntryPoint):
        def load(self):
            raise ImportError("no module named my_package")

    monkeypatch.setattr(metadata, "entry_points", lambda group: [Broken()])
    with pytest.raises(LesionsegError, match="my-parts"):
        recipe_module.import_parts()


def test_info_into_a_closed_pipe_is_not_an_error(tmp_path):
    """``lesionseg info ... | head``: the reader is gone before lesionseg writes."""
    ds = msd(tmp_path / "ds", n_train=2, n_test=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "lesionseg", "info", str(ds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # like head exiting at once
    stderr = process.stderr.read()
    assert process.wait() == 0, stderr
    assert stderr == ""


def test_owner_kind_recognises_folders_made_before_markers(tmp_path):
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "cache.json").write_text('{"format": 1}')
    assert owner_kind(cache) == "cache"
    assert owner_kind(tmp_path) is None


def test_temporaries_of_live_runs_are_left_alone(tmp_path):
    import os
    import socket

    from lesionseg.data.ownership import temp_prefix

    folder = tmp_path / "out"
    folder.mkdir()
    mine = folder / f"{temp_prefix()}case.nii.gz"  # this process: alive
    mine.write_bytes(b"being written")
    dead = folder / f"{TEMP_PREFIX}{socket.gethostname()}@{2**22 + 12345}-case.nii.gz"
    dead.write_bytes(b"left by a kill")
    elsewhere = folder / f"{TEMP_PREFIX}other-host@{os.getpid()}-case.nii.gz"
    elsewhere.write_bytes(b"another machine's run")
    assert clean_temporaries(folder) == 1
    assert mine.exists() and elsewhere.exists() and not dead.exists()


def test_a_foreign_folder_is_refused_before_anything_is_cleaned(tmp_path):
    home = tmp_path / "home"
    (home / "deep").mkdir(parents=True)
    stray = home / "deep" / f"{TEMP_PREFIX}x.nii.gz"
    stray.write_bytes(b"not ours to touch")
    (home / "thesis.tex").write_text("mine")
    with pytest.raises(LesionsegError, match="not written by lesionseg"):
        prepare_output_folder(home, "model", overwrite=True, owned=("*",))
    assert stray.exists()
