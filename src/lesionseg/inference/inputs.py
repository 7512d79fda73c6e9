"""What ``lesionseg predict -i`` accepts, turned into subjects.

* the image files of one subject (in the model's channel order, or ``NAME=path``);
* a data set: a folder with ``dataset.json`` or a CSV/TSV manifest (its test split,
  or every case with ``all_cases``);
* a folder of NIfTI files named ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, …
  (channel ``i`` is the ``i``-th channel of the model's training data set).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from lesionseg.data.dataset import Subject, load_dataset, subject_from_files
from lesionseg.data.nifti import is_nifti_path
from lesionseg.errors import LesionsegError

CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")


def subjects_from_folder(folder: Path, channel_names: Sequence[str]) -> list[Subject]:
    """Subjects from a folder of ``<case>_XXXX.nii[.gz]`` files.

    Raises:
        LesionsegError: No such files, a file without the suffix, or a channel index
            the model does not have.
    """
    cases: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if not is_nifti_path(path):
            continue
        match = CHANNEL_FILE.match(path.name)
        if not match:
            raise LesionsegError(
                "file name lacks the _XXXX channel suffix (expected <case>_0000.nii.gz)", path
            )
        index = int(match["channel"])
        if index >= len(channel_names):
            raise LesionsegError(
                f"channel {index:04d} but the model has only {len(channel_names)} channel(s) "
                f"({', '.join(channel_names)})",
                path,
            )
        cases.setdefault(match["case"], {})[index] = path
    if not cases:
        raise LesionsegError("no NIfTI files in this folder", folder)
    subjects = []
    for case, files in sorted(cases.items()):
        channels = {channel_names[i]: files[i] for i in sorted(files)}
        subjects.append(Subject(case, channels, split="test"))
    return subjects


def subjects_from_inputs(
    inputs: Sequence[str | Path],
    channel_names: Sequence[str],
    all_cases: bool = False,
    subject_id: str | None = None,
    file_channels: Sequence[str] | None = None,
) -> list[Subject]:
    """The subjects to predict from the ``-i`` arguments.

    Args:
        inputs: One data set / folder, or the files of one subject.
        channel_names: The model's channels (names for unnamed files and folder indices).
        all_cases: For a data set, every case instead of the test split.
        subject_id: Case name for the files of one subject (default: what the files'
            names have in common, :func:`~lesionseg.data.dataset.subject_name`).
        file_channels: The channel each ``_XXXX`` index of a folder means (default:
            ``channel_names``); channels the model does not read are skipped later.

    Raises:
        LesionsegError: Nothing usable, or a data set without test cases.
    """
    if not inputs:
        raise LesionsegError("no input given (-i)")
    first = Path(inputs[0])
    is_dataset = len(inputs) == 1 and (
        (first.is_dir() and (first / "dataset.json").is_file())
        or first.suffix.lower() in (".csv", ".tsv", ".tab")
        or first.name == "dataset.json"
    )
    if is_dataset:
        dataset = load_dataset(first)
        subjects = list(dataset.subjects) if all_cases else dataset.split("test")
        if not subjects:
            raise LesionsegError(
                "data set has no test cases; use --all to predict every case", first
            )
        return subjects
    if len(inputs) == 1 and first.is_dir():
        return subjects_from_folder(first, file_channels or channel_names)
    for item in inputs:
        path = Path(str(item).split("=", 1)[-1]) if "=" in str(item) else Path(item)
        if path.is_dir():
            raise LesionsegError("give one folder or data set, or the files of one subject", path)
    named = [str(i) for i in inputs if "=" in str(i) and not Path(i).exists()]
    if not named and file_channels and len(inputs) == len(file_channels) != len(channel_names):
        # the files of every channel the model was trained with, some of them unread
        channel_names = file_channels
    if not named and len(inputs) != len(channel_names):
        raise LesionsegError(
            f"{len(inputs)} file(s) given but the model takes {len(channel_names)} channel(s) "
            f"({', '.join(channel_names)}); give one file per channel, or NAME=path"
        )
    return [subject_from_files(inputs, channel_names, subject_id=subject_id)]


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``--shard K/N`` (1 ≤ K ≤ N), or torchrun's ``RANK``/``WORLD_SIZE``, or ``(1, 1)``.

    Args:
        text: The option's value, or None.
        env: The environment (default ``os.environ``).

    Returns:
        ``(K, N)``: this process takes the K-th of N shares.

    Raises:
        LesionsegError: A value that is not K/N with 1 ≤ K ≤ N.
    """
    import os

    env = os.environ if env is None else env
    if text is None:
        world = int(env.get("WORLD_SIZE", "1") or 1)
        return (int(env.get("RANK", "0") or 0) + 1, world) if world > 1 else (1, 1)
    parts = str(text).split("/")
    try:
        k, n = (int(p) for p in parts)
    except ValueError:
        k = n = 0
    if len(parts) != 2 or not 1 <= k <= n:
        raise LesionsegError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/8")
    return k, n


def shard_subjects(subjects: Sequence, shard: tuple[int, int]) -> list:
    """The K-th of N interleaved shares of ``subjects`` (sorted by id), for job arrays.

    Every subject belongs to exactly one share, whatever the order the inputs came in.
    Anything with an ``id`` is shared out alike (a BIDS App's subjects and sessions).
    """
    k, n = shard
    ordered = sorted(subjects, key=lambda s: s.id)
    return [s for i, s in enumerate(ordered) if i % n == k - 1]
