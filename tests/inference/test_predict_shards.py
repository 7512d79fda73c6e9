"""``lesionseg predict --shard K/N`` and torchrun ranks: every subject exactly once."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from lesionseg.errors import LesionsegError
from lesionseg.inference.inputs import parse_shard, shard_subjects
from tests.safety.builders import model_folder, msd


def _written(stdout: str) -> set[str]:
    return set(re.findall(r"^(case_\d{3}): ", stdout, re.M))


def _run_concurrently(commands, envs):
    procs = [
        subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c, e in zip(commands, envs)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    return [out for out, _ in outs]


@pytest.mark.parametrize("how", ["shard", "torchrun"])
def test_two_processes_share_the_subjects(tmp_path, how):
    data = msd(tmp_path / "data", n_train=2, n_test=3)
    model = model_folder(tmp_path / "model")
    out = tmp_path / "out"
    base = [sys.executable, "-m", "lesionseg", "predict", "-m", str(model), "-i", str(data)]
    base += ["-o", str(out), "--all", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if how == "shard":
        commands = [[*base, "--shard", f"{k}/2"] for k in (1, 2)]
        envs = [env, env]
    else:  # what torchrun sets for each of its processes
        commands = [base, base]
        envs = [dict(env, RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r)) for r in (0, 1)]
    first, second = (_written(o) for o in _run_concurrently(commands, envs))
    every = {f"case_{i:03d}" for i in range(5)}
    assert first and second and not first & second  # each process its own share
    assert first | second == every
    assert {p.name for p in out.glob("*_seg.nii.gz")} == {f"{c}_seg.nii.gz" for c in every}


def test_shares_are_disjoint_complete_and_order_free():
    from lesionseg.data.dataset import Subject

    subjects = [Subject(f"s{i:02d}", {"T1": f"s{i}.nii.gz"}) for i in range(7)]
    shares = [shard_subjects(subjects, (k, 3)) for k in (1, 2, 3)]
    ids = [s.id for share in shares for s in share]
    assert sorted(ids) == sorted(s.id for s in subjects) and len(ids) == len(set(ids))
    assert shard_subjects(subjects[::-1], (2, 3)) == shares[1]  # the input order is irrelevant
    assert parse_shard(None, {}) == (1, 1)
    assert parse_shard(None, {"RANK": "3", "WORLD_SIZE": "4"}) == (4, 4)
    assert parse_shard("2/8", {"RANK": "0", "WORLD_SIZE": "2"}) == (2, 8)  # the option wins
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(LesionsegError, match="--shard"):
            parse_shard(bad, {})
