import copy
import json
import signal
import subprocess
import time

import nibabel as nib
import numpy as np
import pytest

# A DeepMedic small enough for a training step in milliseconds: margin 12, output 6³ ← input 30³.
TINY = [
    "--set",
    "model.widths=[4, 4, 4, 4]",
    "--set",
    "model.hidden=[8]",
    "--set",
    "sampler.output_size=[6, 6, 6]",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.workers=0",
    "--set",
    "validation.cases=0",
]


def write_toy_dataset(root, n=4, size=20, seed=0, contrasts=None):
    """A tiny MSD-layout data set: bright/dark spherical lesions in a ball brain.

    ``contrasts`` maps channel names to the lesions' contrast (default A: +40, B: −20).
    """
    contrasts = contrasts or {"A": 40.0, "B": -20.0}
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    grid = np.indices((size,) * 3).astype(np.float32)
    brain = ((grid - size / 2) ** 2).sum(0) < (size * 0.45) ** 2
    for i in range(n):
        label = np.zeros((size,) * 3, np.uint8)
        for _ in range(2):
            centre = rng.uniform(size * 0.3, size * 0.7, 3)
            label[((grid - centre[:, None, None, None]) ** 2).sum(0) < rng.uniform(4, 9)] = 1
        label &= brain
        for ch, contrast in enumerate(contrasts.values()):
            image = brain * (100 + contrast * label + rng.normal(0, 8, label.shape))
            nib.save(
                nib.Nifti1Image(image.astype(np.float32), affine),
                root / "imagesTr" / f"toy_{i:03d}_{ch:04d}.nii.gz",
            )
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"toy_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "toy",
                "channel_names": {str(i): name for i, name in enumerate(contrasts)},
                "labels": {"background": 0, "lesion": 1},
                "numTraining": n,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy")


@pytest.fixture(scope="session")
def tiny_args():
    return list(TINY)


def _reached(out, stage, epoch) -> bool:
    import torch

    checkpoint = out / "checkpoint.pt"
    if not checkpoint.is_file():
        return False
    try:
        state = torch.load(checkpoint, weights_only=True)
    except (RuntimeError, EOFError):  # being replaced right now
        return False
    return (state["stage"], state["epoch"]) >= (stage, epoch)


def kill_when_checkpointed(argv, env, out, stage, epoch, timeout=300, settle=0.0):
    """Run ``argv``; SIGKILL it once its checkpoint in ``out`` reached (stage, epoch)."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + timeout
        while not _reached(out, stage, epoch):
            if proc.poll() is not None:
                raise AssertionError(f"training ended early: {proc.stderr.read()}")
            if time.time() > deadline:
                raise AssertionError("timed out waiting for the checkpoint")
            time.sleep(0.02)
        time.sleep(settle)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


def record_slots(monkeypatch):
    """Adam's state as each stage starts and as it ends, by stage name."""
    seen: dict[str, dict] = {}
    from lesionseg.training.trainer import Trainer

    slot_of = Trainer._slot
    end_stage = Trainer._end_stage

    def at_start(self, stage, network, first_epoch, use_amp):
        slot = slot_of(self, stage, network, first_epoch, use_amp)
        seen[f"start:{stage['name']}"] = copy.deepcopy(slot.state_dict())
        return slot

    def at_end(self, si, stages, folder, selection):
        stage = stages[si]
        seen[f"end:{stage['name']}"] = copy.deepcopy(self.slots[stage["network"]].state_dict())
        return end_stage(self, si, stages, folder, selection)

    monkeypatch.setattr(Trainer, "_slot", at_start)
    monkeypatch.setattr(Trainer, "_end_stage", at_end)
    return seen


def assert_equal_states(a, b):
    """Nested state dicts equal, tensors bit for bit."""
    import torch

    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_equal_states(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def train_single_threaded(recipe, dataset, root, args):
    """``lesionseg train RECIPE`` in this process into ``root/model`` with one thread.

    One thread, as the killed runs of the SIGKILL tests: the same sums, so the resumed
    model can be compared with this one bit for bit.
    """
    import torch

    from lesionseg.cli.main import main

    out = root / "model"
    argv = ["train", recipe, "-d", str(dataset), "-o", str(out), *args]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*argv, "--cache", str(root / "cache"), "--device", "cpu", "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def kill_resume_and_compare(recipe, dataset, args, reference, tmp_path, stage, files):
    """Kill ``lesionseg train RECIPE`` after one epoch of ``stage``, resume, compare.

    The resumed run's ``files`` (safetensors, relative to the model folder) must equal
    those of ``reference`` (:func:`train_single_threaded` with the same ``args``) bit for bit.
    """
    import os
    import sys

    import torch
    from safetensors.torch import load_file

    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "lesionseg", "train", recipe, "-d", str(dataset), *args]
    common = ["--device", "cpu", "--quiet", "--cache", str(tmp_path / "cache")]
    out = tmp_path / "killed"
    kill_when_checkpointed([*base, "-o", str(out), *common], env, out, stage, 1)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["stage"] == stage and state["epoch"] >= 1
    resume_in_subprocess(out, env)
    for name in files:
        a, b = load_file(str(reference / name)), load_file(str(out / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def resume_in_subprocess(out, env) -> None:
    """``lesionseg train --resume OUT`` in a fresh process; it must succeed."""
    import sys

    resumed = subprocess.run(
        [sys.executable, "-m", "lesionseg", "train", "--resume", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
