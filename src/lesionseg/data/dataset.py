"""Data sets: lists of subjects with named image channels, label map and brain mask.

Three sources are read, all into the same :class:`Dataset`:

* the Medical Segmentation Decathlon / nnU-Net v2 layout (``dataset.json`` with
  ``channel_names``, ``labels``, ``file_ending``; ``imagesTr``/``labelsTr``/``imagesTs``
  [/``labelsTs``] with ``_0000`` channel suffixes; an optional ``masksTr``/``masksTs``
  folder of brain masks named ``<case>.nii.gz``);
* a CSV/TSV manifest, one row per subject and one column per channel, plus optional
  ``label``, ``mask`` and ``split`` columns (paths relative to the manifest);
* plain files named on the command line (prediction only).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lesionseg.data.nifti import is_nifti_path, strip_nifti_suffix
from lesionseg.errors import LesionsegError

RESERVED_COLUMNS = ("subject", "label", "mask", "split")


@dataclass
class Subject:
    """One subject (case): named image channels, optional label map and brain mask.

    Attributes:
        id: Case identifier, unique within a data set.
        channels: Channel name → image file, in the data set's channel order.
        label: Label map file, or None for unlabelled cases.
        mask: Brain mask file, or None (then derived from non-zero voxels).
        split: ``"train"`` or ``"test"``.
    """

    id: str
    channels: dict[str, Path]
    label: Path | None = None
    mask: Path | None = None
    split: str = "train"

    def files(self) -> list[Path]:
        """All files of the subject (channels, then label and mask when present)."""
        extra = [p for p in (self.label, self.mask) if p is not None]
        return list(self.channels.values()) + extra


@dataclass
class Dataset:
    """A named list of subjects sharing channel names and label definitions.

    Attributes:
        name: Data set name.
        channel_names: Channel (modality) names in input order, e.g. ``["T1", "FLAIR"]``.
        labels: Label value → name; 0 is background.
        subjects: Training and test subjects.
        root: Folder or manifest file the data set was read from.
    """

    name: str
    channel_names: list[str]
    labels: dict[int, str]
    subjects: list[Subject] = field(default_factory=list)
    root: Path | None = None

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects)

    def __len__(self) -> int:
        return len(self.subjects)

    def split(self, name: str) -> list[Subject]:
        """Subjects of one split (``"train"`` or ``"test"``)."""
        return [s for s in self.subjects if s.split == name]

    def subject(self, subject_id: str) -> Subject:
        """The subject called ``subject_id``."""
        for s in self.subjects:
            if s.id == subject_id:
                return s
        raise LesionsegError(f"no subject called {subject_id!r} in data set {self.name!r}")

    @property
    def num_classes(self) -> int:
        """Number of classes including background (max label value + 1)."""
        return max(self.labels) + 1 if self.labels else 2


def _parse_labels(raw: dict, source: Path) -> dict[int, str]:
    """Read MSD/nnU-Net labels (either ``{"0": "background"}`` or ``{"background": 0}``)."""
    labels: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, list):  # nnU-Net region labels: {"whole": [1, 2, 3]}
            raise LesionsegError(f"region-based label {key!r} is not supported", source)
        try:
            if str(key).lstrip("-").isdigit():
                labels[int(key)] = str(value)
            else:
                labels[int(value)] = str(key)
        except (TypeError, ValueError):
            raise LesionsegError(f"label {key!r}: {value!r} is not an integer", source) from None
    if 0 not in labels:
        labels[0] = "background"
    return dict(sorted(labels.items()))


def _parse_channels(raw: dict, source: Path) -> list[str]:
    try:
        items = sorted(((int(k), str(v)) for k, v in raw.items()), key=lambda kv: kv[0])
    except ValueError:
        raise LesionsegError("channel_names keys must be '0', '1', ...", source) from None
    if [k for k, _ in items] != list(range(len(items))):
        raise LesionsegError("channel_names keys must be consecutive from '0'", source)
    return [v for _, v in items]


def load_msd(root: str | Path) -> Dataset:
    """Read a data set in the MSD / nnU-Net v2 layout.

    Args:
        root: Folder holding ``dataset.json`` and ``imagesTr`` (and optionally
            ``labelsTr``, ``imagesTs``, ``labelsTs``, ``masksTr``, ``masksTs``).

    Raises:
        LesionsegError: If dataset.json is missing or malformed, or does not match
            the files (missing channel files, labels without images, wrong count).
    """
    root = Path(root)
    spec_path = root / "dataset.json"
    if not spec_path.is_file():
        raise LesionsegError("no dataset.json in this folder", root)
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as err:
        raise LesionsegError(f"invalid JSON ({err})", spec_path) from None
    for key in ("channel_names", "labels"):
        if key not in spec:
            alt = {"channel_names": "modality"}.get(key)
            if alt and alt in spec:  # MSD (v1) name of the same field
                spec[key] = spec[alt]
            else:
                raise LesionsegError(f"missing required key {key!r}", spec_path)
    channel_names = _parse_channels(spec["channel_names"], spec_path)
    labels = _parse_labels(spec["labels"], spec_path)
    ending = spec.get("file_ending", ".nii.gz")
    if not is_nifti_path("x" + ending):
        raise LesionsegError(f"file_ending {ending!r} is not NIfTI (.nii or .nii.gz)", spec_path)

    subjects: list[Subject] = []
    for split, images_dir, labels_dir, masks_dir in (
        ("train", "imagesTr", "labelsTr", "masksTr"),
        ("test", "imagesTs", "labelsTs", "masksTs"),
    ):
        subjects += _scan_split(
            root, split, images_dir, labels_dir, masks_dir, channel_names, ending
        )
    if not subjects:
        raise LesionsegError("no cases found in imagesTr or imagesTs", root)
    expected = spec.get("numTraining")
    n_train = sum(1 for s in subjects if s.split == "train")
    if expected is not None and int(expected) != n_train:
        raise LesionsegError(
            f"numTraining is {expected} but imagesTr holds {n_train} cases", spec_path
        )
    return Dataset(spec.get("name", root.name), channel_names, labels, subjects, root)


def _scan_split(
    root: Path,
    split: str,
    images_dir: str,
    labels_dir: str,
    masks_dir: str,
    channel_names: list[str],
    ending: str,
) -> list[Subject]:
    folder = root / images_dir
    if not folder.is_dir():
        return []
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    cases: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        match = pattern.match(path.name)
        if not match:
            if path.name.endswith(ending):
                raise LesionsegError(
                    f"file name lacks the _XXXX channel suffix before {ending!r}", path
                )
            continue
        cases.setdefault(match["case"], {})[int(match["channel"])] = path
    subjects = []
    for case, files in sorted(cases.items()):
        missing = [f"{i:04d}" for i in range(len(channel_names)) if i not in files]
        if missing:
            raise LesionsegError(
                f"case {case!r} lacks channel file(s) {', '.join(missing)} "
                f"({len(channel_names)} channels declared in dataset.json)",
                folder,
            )
        extra = sorted(set(files) - set(range(len(channel_names))))
        if extra:
            raise LesionsegError(
                f"case {case!r} has channel {extra[0]:04d} but dataset.json declares "
                f"only {len(channel_names)} channel(s)",
                files[extra[0]],
            )
        label = root / labels_dir / f"{case}{ending}"
        mask = root / masks_dir / f"{case}{ending}"
        subjects.append(
            Subject(
                id=case,
                channels={name: files[i] for i, name in enumerate(channel_names)},
                label=label if label.is_file() else None,
                mask=mask if mask.is_file() else None,
                split=split,
            )
        )
    if split == "train":
        label_folder = root / labels_dir
        known = {s.id for s in subjects}
        if label_folder.is_dir():
            for path in sorted(label_folder.glob(f"*{ending}")):
                case = path.name[: -len(ending)]
                if case not in known:
                    raise LesionsegError(f"label map has no images in {images_dir}", path)
        unlabelled = [s.id for s in subjects if s.label is None]
        if unlabelled:
            raise LesionsegError(
                f"training case {unlabelled[0]!r} has no label map {labels_dir}/"
                f"{unlabelled[0]}{ending}",
                root,
            )
    return subjects


def load_manifest(
    path: str | Path,
    labels: dict[int, str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Read a CSV or TSV manifest with one row per subject.

    Columns: ``subject`` (required), one column per channel (any other name, in
    file order), optional ``label``, ``mask`` and ``split`` (``train``/``test``).
    Relative paths are taken relative to the manifest's folder. Label names, when
    not given, are ``background`` and ``lesion`` for a binary task.

    Raises:
        LesionsegError: Missing file, missing subject column, duplicate subjects, no channels.
    """
    path = Path(path)
    if not path.is_file():
        raise LesionsegError("manifest not found", path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream, delimiter=delimiter)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if "subject" not in columns:
        raise LesionsegError("manifest needs a 'subject' column", path)
    channel_names = [c for c in columns if c not in RESERVED_COLUMNS]
    if not channel_names:
        raise LesionsegError("manifest has no channel columns", path)
    base = path.parent
    subjects: list[Subject] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        sid = row["subject"]
        if not sid:
            raise LesionsegError(f"line {line}: empty subject id", path)
        if sid in seen:
            raise LesionsegError(f"line {line}: subject {sid!r} appears twice", path)
        seen.add(sid)
        channels = {}
        for ch in channel_names:
            if not row.get(ch):
                raise LesionsegError(f"line {line}: subject {sid!r} has no {ch} file", path)
            channels[ch] = base / row[ch]
        label = base / row["label"] if row.get("label") else None
        mask = base / row["mask"] if row.get("mask") else None
        split = row.get("split") or ("train" if label is not None else "test")
        if split not in ("train", "test"):
            raise LesionsegError(f"line {line}: split must be 'train' or 'test'", path)
        subjects.append(Subject(sid, channels, label, mask, split))
    if not subjects:
        raise LesionsegError("manifest lists no subjects", path)
    return Dataset(
        name or path.stem, channel_names, labels or {0: "background", 1: "lesion"}, subjects, path
    )


def subject_from_files(
    files: Sequence[str | Path],
    channel_names: Sequence[str] | None = None,
    subject_id: str | None = None,
) -> Subject:
    """Make one unlabelled subject from image files named on the command line.

    Args:
        files: One NIfTI file per channel, in the model's channel order, or named
            ``NAME=path`` to give the channel explicitly.
        channel_names: The model's channel names, used for unnamed files.
        subject_id: Case id (default: the first file's name without suffix).
    """
    channels: dict[str, Path] = {}
    for i, item in enumerate(files):
        text = str(item)
        if "=" in text and not Path(text).exists():
            key, value = text.split("=", 1)
        else:
            if channel_names is None or i >= len(channel_names):
                key = f"channel{i}"
            else:
                key = channel_names[i]
            value = text
        if key in channels:
            raise LesionsegError(f"channel {key!r} given twice", value)
        channels[key] = Path(value)
    first = Path(next(iter(channels.values())))
    sid = subject_id or re.sub(r"_\d{4}$", "", strip_nifti_suffix(first.name))
    return Subject(sid, channels, split="test")


def load_dataset(source: str | Path) -> Dataset:
    """Read a data set from a folder with dataset.json or a CSV/TSV manifest.

    Raises:
        LesionsegError: If the source is neither.
    """
    source = Path(source)
    if source.is_dir():
        return load_msd(source)
    if source.suffix.lower() in (".csv", ".tsv", ".tab"):
        return load_manifest(source)
    if source.name == "dataset.json":
        return load_msd(source.parent)
    if not source.exists():
        raise LesionsegError("data set not found", source)
    raise LesionsegError(
        "not a data set (expected a folder with dataset.json, or a .csv/.tsv manifest)", source
    )
