"""The preprocessed cache that training reads quickly.

Layout of a cache folder::

    cache.json              channel names, labels, preprocessing settings, subject ids
    <case>/image.npy        (C, X, Y, Z) float32, memory-mappable
    <case>/mask.npy         (X, Y, Z) uint8 brain mask
    <case>/label.npy        (X, Y, Z) uint8 labels (labelled cases only)
    <case>/record.json      the PreprocessRecord and the inputs' fingerprint

Each subject folder is written under a temporary name and renamed when complete,
so an interrupted run leaves no half-written subject; re-running skips subjects
whose input files (size, modification time) and settings did not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lesionseg import __version__
from lesionseg.data.atomic import write_json_atomic, writing
from lesionseg.data.dataset import Dataset, Subject
from lesionseg.data.ownership import (
    prepare_output_folder,
    remove_owned,
    scanned_folders,
    temp_prefix,
)
from lesionseg.errors import LesionsegError
from lesionseg.preprocess.pipeline import PreprocessConfig, preprocess_subject
from lesionseg.preprocess.record import PreprocessRecord

CACHE_FORMAT = 1
CACHE_KIND = "cache"


def _fingerprint(subject: Subject, channel_names: Sequence[str], config: PreprocessConfig) -> str:
    """Hash of everything that decides a subject's cached arrays."""
    parts: list = [CACHE_FORMAT, list(channel_names), config.to_dict()]
    for path in [subject.channels[c] for c in channel_names] + [subject.label, subject.mask]:
        if path is None:
            parts.append(None)
            continue
        stat = Path(path).stat()
        parts.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass
class CachedSubject:
    """A preprocessed subject whose arrays are memory-mapped on first access.

    Only the folder path travels when the object is pickled to loader workers; stored
    outputs of earlier stages (``outputs``: name → ``.npy`` file under ``<case>/outputs/``)
    are memory-mapped by whoever reads them.
    """

    id: str
    folder: Path
    split: str
    spacing: tuple[float, float, float]
    record: PreprocessRecord
    has_label: bool
    channel_names: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)
    _arrays: dict = field(default_factory=dict, repr=False, compare=False)

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    @property
    def image(self) -> np.ndarray:
        """``(C, X, Y, Z)`` float32 image (read-only memory map)."""
        return self._array("image")

    @property
    def mask(self) -> np.ndarray:
        """``(X, Y, Z)`` uint8 brain mask."""
        return self._array("mask")

    @property
    def label(self) -> np.ndarray | None:
        """``(X, Y, Z)`` uint8 labels, or None for unlabelled cases."""
        return self._array("label") if self.has_label else None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


@dataclass
class CachedDataset:
    """A preprocessed data set on disk."""

    root: Path
    name: str
    channel_names: list[str]
    labels: dict[int, str]
    config: PreprocessConfig
    subjects: list[CachedSubject]

    def __len__(self) -> int:
        return len(self.subjects)

    def split(self, name: str) -> list[CachedSubject]:
        """Subjects of one split."""
        return [s for s in self.subjects if s.split == name]

    def subject(self, subject_id: str) -> CachedSubject:
        """The subject called ``subject_id``."""
        for s in self.subjects:
            if s.id == subject_id:
                return s
        raise LesionsegError(f"no subject {subject_id!r} in the cache", self.root)


def _write_subject(folder: Path, subject: Subject, dataset: Dataset, config, fingerprint: str):
    pre = preprocess_subject(subject, dataset.channel_names, config, labels=list(dataset.labels))
    root = folder.parent
    needed = pre.image.nbytes + 2 * pre.mask.nbytes
    with writing(folder, needed):
        tmp = Path(tempfile.mkdtemp(prefix=f"{temp_prefix()}{subject.id}.", dir=root))
    try:
        with writing(folder, needed):
            np.save(tmp / "image.npy", pre.image)
            np.save(tmp / "mask.npy", pre.mask)
            if pre.label is not None:
                np.save(tmp / "label.npy", pre.label)
            meta = {
                "id": subject.id,
                "split": subject.split,
                "fingerprint": fingerprint,
                "has_label": pre.label is not None,
                "record": pre.record.to_json(),
            }
            (tmp / "record.json").write_text(json.dumps(meta, indent=1))
            if folder.exists():
                remove_owned(folder, root)
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            remove_owned(tmp, root)


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "record.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def preprocess_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    config: PreprocessConfig | None = None,
    subjects: Sequence[Subject] | None = None,
    progress: bool = True,
) -> CachedDataset:
    """Preprocess a data set into a cache folder, skipping subjects that are up to date.

    Args:
        dataset: The data set to read.
        out_dir: Cache folder (created).
        config: Preprocessing settings.
        subjects: Only these subjects (default: all).
        progress: Show a progress bar.

    Returns:
        The cache, opened.
    """
    config = config or PreprocessConfig()
    inputs = [] if dataset.root is None else [dataset.root]
    out = prepare_output_folder(
        out_dir,
        CACHE_KIND,
        overwrite=False,
        reusable=True,
        protect=inputs,
        scanned=[f for root in inputs for f in scanned_folders(root)],
    )
    chosen = list(subjects if subjects is not None else dataset.subjects)
    done = 0
    bar = tqdm(chosen, desc="preprocess", unit="subject", disable=not progress, leave=False)
    for subject in bar:
        bar.set_postfix_str(subject.id)
        fingerprint = _fingerprint(subject, dataset.channel_names, config)
        folder = out / subject.id
        meta = _read_meta(folder)
        if meta is not None and meta.get("fingerprint") == fingerprint:
            continue
        _write_subject(folder, subject, dataset, config, fingerprint)
        done += 1
    write_json_atomic(
        out / "cache.json",
        {
            "format": CACHE_FORMAT,
            "lesionseg_version": __version__,
            "name": dataset.name,
            "channel_names": dataset.channel_names,
            "labels": {str(k): v for k, v in dataset.labels.items()},
            "preprocess": config.to_dict(),
            "subjects": [s.id for s in chosen],
            "source": None if dataset.root is None else str(dataset.root),
        },
    )
    cache = open_cache(out)
    cache.newly_written = done  # type: ignore[attr-defined]
    return cache


def open_cache(root: str | Path) -> CachedDataset:
    """Open a cache folder written by :func:`preprocess_dataset`.

    Raises:
        LesionsegError: If the folder is not a complete cache.
    """
    root = Path(root)
    spec_path = root / "cache.json"
    if not spec_path.is_file():
        raise LesionsegError("not a lesionseg preprocessed cache (no cache.json)", root)
    spec = json.loads(spec_path.read_text())
    subjects = []
    for sid in spec["subjects"]:
        meta = _read_meta(root / sid)
        if meta is None:
            raise LesionsegError(
                f"subject {sid!r} is missing or incomplete; rerun preprocess", root
            )
        record = PreprocessRecord.from_json(meta["record"])
        subjects.append(
            CachedSubject(
                id=sid,
                folder=root / sid,
                split=meta["split"],
                spacing=tuple(record.spacing),
                record=record,
                has_label=meta["has_label"],
                channel_names=list(spec["channel_names"]),
            )
        )
    return CachedDataset(
        root=root,
        name=spec["name"],
        channel_names=list(spec["channel_names"]),
        labels={int(k): v for k, v in spec["labels"].items()},
        config=PreprocessConfig.from_dict(spec["preprocess"]),
        subjects=subjects,
    )
