"""The training loop end to end on a tiny DeepMedic: determinism, resume after SIGKILL, torchrun."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from lesionseg.cli.main import main
from lesionseg.training.splits import holdout_split, kfold_splits


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def train_args(tiny_args):
    def make(dataset, out, *extra):
        return [
            "train",
            "deepmedic-tiny",
            "-d",
            str(dataset),
            "-o",
            str(out),
            "--quiet",
            "--device",
            "cpu",
            "--cache",
            str(out.parent / "cache"),
            *tiny_args,
            *extra,
        ]

    return make


def test_same_seed_same_weights_and_outputs(toy_dataset, tmp_path, train_args):
    args = ["--epochs", "2", "--set", "train.batches_per_epoch=3"]
    assert main(train_args(toy_dataset, tmp_path / "a", *args)) == 0
    assert main(train_args(toy_dataset, tmp_path / "b", *args)) == 0
    assert main(train_args(toy_dataset, tmp_path / "c", *args, "--seed", "5")) == 0
    _assert_same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    c = _weights(tmp_path / "c")
    assert any(not torch.equal(c[k], v) for k, v in _weights(tmp_path / "a").items())
    out = tmp_path / "a"
    for name in (
        "config.json",
        "last/model.safetensors",
        "recipe.yaml",
        "splits.json",
        "log.csv",
        "progress.png",
        "checkpoint.pt",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert (
        config["channel_names"] == ["A", "B"] and config["recipe"]["model"]["name"] == "deepmedic"
    )
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,stage")
    # an existing folder is not overwritten silently
    assert main(train_args(toy_dataset, tmp_path / "a", *args)) == 2


def _wait_for_epoch(out, epoch, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        checkpoint = out / "checkpoint.pt"
        if checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["epoch"] >= epoch:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_resume_after_sigkill_equals_uninterrupted(toy_dataset, tmp_path, train_args):
    args = [
        "--epochs",
        "3",
        "--set",
        "train.batches_per_epoch=12",
        "--set",
        "model.dropout=0.5",
        "--set",
        "sampler.augment=[{name: flip}, {name: intensity-shift}]",
    ]
    # Every run in a subprocess with one thread: bit-exact float results need the same
    # number of threads (summation order), which is what a resumed run on the same machine has.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    lesionseg = [sys.executable, "-m", "lesionseg"]
    full = subprocess.run(
        [*lesionseg, *train_args(toy_dataset, tmp_path / "full", *args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 0, full.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*lesionseg, *train_args(toy_dataset, out, *args)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_for_epoch(out, 1, proc)
        time.sleep(0.3)  # into epoch 2 (12 batches take well over 0.3 s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "training.json").exists()  # killed before the end
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (state["stage"], state["epoch"]) == (0, 1)  # killed during epoch 2
    resumed = subprocess.run(
        [*lesionseg, "train", "--resume", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same(_weights(tmp_path / "full"), _weights(out))
    assert len((out / "log.csv").read_text().strip().splitlines()) == 4
    assert main(["train", "--resume", str(out), "--quiet"]) == 2  # finished: nothing to resume


def test_torchrun_two_cpu_ranks_agree(toy_dataset, tmp_path, train_args):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "lesionseg",
        *train_args(toy_dataset, out, "--epochs", "1", "--set", "train.batches_per_epoch=3"),
    ]
    # A session of its own, so that a hang kills the workers too, not only the launcher.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    digests = dict(re.findall(r"rank (\d+): weights sha256 ([0-9a-f]+)", stderr))
    assert set(digests) == {"0", "1"}
    assert digests["0"] == digests["1"]
    assert (out / "model.safetensors").is_file()


def test_splits():
    ids = [f"s{i}" for i in range(7)]
    folds = kfold_splits(ids, 3, seed=0)
    validated = sorted(i for f in folds for i in f["validation"])
    assert validated == sorted(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["validation"])
        assert sorted(f["train"] + f["validation"]) == sorted(ids)
    assert kfold_splits(ids, 3, seed=0) == folds
    assert len(holdout_split(ids, 0.3, seed=1)["validation"]) == 2
    assert holdout_split(ids, ["s3"], seed=1)["validation"] == ["s3"]
    assert holdout_split(ids, 0, seed=1)["validation"] == []
