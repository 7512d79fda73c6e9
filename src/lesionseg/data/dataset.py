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
import functools
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ParamSpec, TypeVar

from lesionseg.data.nifti import NIFTI_SUFFIXES, strip_nifti_suffix
from lesionseg.errors import LesionsegError

P = ParamSpec("P")
R = TypeVar("R")

RESERVED_COLUMNS = ("subject", "label", "mask", "split")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".tab")
#: Longest subject id accepted; ids become file and folder names (limit 255 bytes), with room
#: for the suffixes the tool adds (``_seg.nii.gz``, temporary-file prefixes).
MAX_SUBJECT_ID_LENGTH = 200


def _subject_id_problem(sid: str) -> str | None:
    """Why ``sid`` cannot name a subject's files and folders, or None if it can."""
    if not sid:
        return "it is empty"
    if sid in (".", ".."):
        return "'.' and '..' name folders, not subjects"
    if "/" in sid or "\\" in sid:
        return "it holds a path separator ('/' or '\\')"
    if any(ord(c) < 32 or ord(c) == 127 for c in sid):
        return "it holds a control character"
    if sid.startswith("."):
        # names starting with '.' are hidden, and the tool's own temporary files use them
        return "it starts with '.' (kept for hidden and temporary files)"
    if len(sid.encode()) > MAX_SUBJECT_ID_LENGTH:  # file names are limited in bytes
        return f"it is {len(sid.encode())} bytes long (at most {MAX_SUBJECT_ID_LENGTH})"
    return None


def check_subject_id(sid: str, path: str | Path | None = None, where: str = "") -> str:
    """Raise unless ``sid`` is safe as a file and folder name; the one rule for subject ids.

    Ids name cache folders and prediction files, so an id such as ``..`` or ``a/b`` would
    make later code write or delete outside its folder.

    Args:
        sid: The subject id.
        path: The file the id came from (manifest, image file), named in the error.
        where: Where in that file, e.g. ``"line 3"``, or the option that gave the id.

    Returns:
        ``sid``, unchanged.

    Raises:
        LesionsegError: If the id is empty, ``.`` or ``..``, holds a path separator or a
            control character, starts with ``.``, or is too long.
    """
    problem = _subject_id_problem(sid)
    if problem is not None:
        shown = sid if len(sid) <= 60 else sid[:40] + "..."
        prefix = f"{where}: " if where else ""
        raise LesionsegError(f"{prefix}invalid subject id {shown!r}: {problem}", path)
    return sid


@dataclass
class Subject:
    """One subject (case): named image channels, optional label map and brain mask.

    Attributes:
        id: Case identifier, unique within a data set.
        channels: Channel name → image file, in the data set's channel order.
        label: Label map file, or None for unlabelled cases.
        mask: Brain mask file, or None (then derived from non-zero voxels).
        split: ``"train"`` or ``"test"``.
        volumes: Channel name → volume of its (4D) file, for channels stored as the
            volumes of one image (the Decathlon v1 layout); empty: each file is 3D.
    """

    id: str
    channels: dict[str, Path]
    label: Path | None = None
    mask: Path | None = None
    split: str = "train"
    volumes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a backstop for subjects made outside the loaders, which check ids with more context
        check_subject_id(self.id, next(iter(self.channels.values()), None))

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

    def select_channels(self, names: Sequence[str] | None) -> Dataset:
        """The same data set reading only the channels ``names``, in that order.

        Args:
            names: Channel names of this data set (None: this data set, unchanged).

        Raises:
            LesionsegError: A name the data set does not have.
        """
        if names is None:
            return self
        missing = [n for n in names if n not in self.channel_names]
        if missing:
            raise LesionsegError(
                f"recipe channels: the data set has no channel {', '.join(map(repr, missing))} "
                f"(it has {', '.join(self.channel_names)})",
                self.root,
            )
        subjects = [
            replace(s, channels={n: s.channels[n] for n in names if n in s.channels})
            for s in self.subjects
        ]
        return replace(self, channel_names=list(names), subjects=subjects)

    @property
    def num_classes(self) -> int:
        """Number of classes including background (max label value + 1)."""
        return max(self.labels) + 1 if self.labels else 2


def _reading(load: Callable[P, R]) -> Callable[P, R]:
    """Report a file or folder the system will not read (permissions, I/O) as bad input."""

    @functools.wraps(load)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return load(*args, **kwargs)
        except OSError as err:
            raise LesionsegError(f"cannot read ({err.strerror or err})", err.filename) from None

    return wrapper


def _read_text(path: Path) -> str:
    """The text of a UTF-8 file, without a byte-order mark (spreadsheet programs add one)."""
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise LesionsegError(
            f"not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save it as UTF-8",
            path,
        ) from None


def _json_kind(value: object) -> str:
    """How JSON calls the type of ``value``, for messages."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    for kind, name in ((dict, "an object"), (list, "a list"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _as_int(value: object) -> int | None:
    """``value`` as an integer if it is one (``2``, ``2.0``, ``"2"``), else None."""
    if isinstance(value, bool):  # JSON true/false are not numbers here
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _read_spec(path: Path) -> dict:
    """dataset.json as a dict, or a clear error when it is not a JSON object."""
    try:
        spec = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise LesionsegError(f"invalid JSON ({err})", path) from None
    except RecursionError:
        raise LesionsegError("invalid JSON (nested too deeply)", path) from None
    if not isinstance(spec, dict):
        raise LesionsegError(f"must hold a JSON object {{...}}, found {_json_kind(spec)}", path)
    return spec


def _require_object(spec: dict, key: str, example: str, source: Path) -> dict:
    """``spec[key]``, which must be a JSON object."""
    value = spec[key]
    if not isinstance(value, dict):
        raise LesionsegError(
            f"{key} must be an object like {example}, found {_json_kind(value)}", source
        )
    return value


def _optional_string(spec: dict, key: str, default: str, source: Path) -> str:
    """``spec[key]`` if present (it must then be a string), else ``default``."""
    value = spec.get(key, default)
    if not isinstance(value, str):
        raise LesionsegError(f"{key} must be a string, found {_json_kind(value)}", source)
    return value


def _parse_labels(raw: dict, source: Path) -> dict[int, str]:
    """Read MSD/nnU-Net labels (either ``{"0": "background"}`` or ``{"background": 0}``)."""
    labels: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, list):  # nnU-Net region labels: {"whole": [1, 2, 3]}
            raise LesionsegError(f"region-based label {key!r} is not supported", source)
        # the number is the key ({"1": "lesion"}) or the value ({"lesion": 1})
        key_number = _as_int(key)
        number, name = (key_number, value) if key_number is not None else (_as_int(value), key)
        if number is None:
            raise LesionsegError(f"label {key!r}: {value!r} is not an integer", source)
        if not isinstance(name, str):
            raise LesionsegError(f"label {key!r}: {value!r} is not a name", source)
        if not 0 <= number <= 255:  # label maps are stored as uint8
            raise LesionsegError(f"label {key!r}: value {number} is outside 0-255", source)
        if number in labels:
            raise LesionsegError(
                f"label value {number} is given twice ({labels[number]!r} and {name!r})",
                source,
            )
        labels[number] = name
    if 0 not in labels:
        labels[0] = "background"
    return dict(sorted(labels.items()))


def _parse_channels(raw: dict, source: Path) -> list[str]:
    """Channel names in index order from ``{"0": "T1", "1": "FLAIR"}``."""
    by_index: dict[int, str] = {}
    for key, value in raw.items():
        index = _as_int(key)
        if index is None:
            raise LesionsegError("channel_names keys must be '0', '1', ...", source)
        if not isinstance(value, str) or not value.strip():
            raise LesionsegError(f"channel {key!r} needs a name, found {value!r}", source)
        by_index[index] = value
    if sorted(by_index) != list(range(len(by_index))):
        raise LesionsegError("channel_names keys must be consecutive from '0'", source)
    names = [by_index[i] for i in range(len(by_index))]
    repeated = _first_repeat(names)
    if repeated is not None:
        raise LesionsegError(f"channel name {repeated!r} is given twice in channel_names", source)
    return names


def _first_repeat(names: Sequence[str]) -> str | None:
    """The first name that appears a second time in ``names``, or None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


@_reading
def load_msd(root: str | Path) -> Dataset:
    """Read a data set in the MSD / nnU-Net v2 layout.

    Args:
        root: Folder holding ``dataset.json`` and ``imagesTr`` (and optionally
            ``labelsTr``, ``imagesTs``, ``labelsTs``, ``masksTr``, ``masksTs``).

    Raises:
        LesionsegError: If dataset.json is missing or malformed, or does not match
            the files (missing channel files, labels without images, wrong count,
            unsafe case names).
    """
    root = Path(root)
    spec_path = root / "dataset.json"
    if not spec_path.is_file():
        raise LesionsegError("no dataset.json in this folder", root)
    spec = _read_spec(spec_path)
    if "channel_names" not in spec and isinstance(spec.get("training"), list):
        return _load_decathlon_v1(root, spec, spec_path)
    for key in ("channel_names", "labels"):
        if key not in spec:
            alt = {"channel_names": "modality"}.get(key)
            if alt and alt in spec:  # MSD (v1) name of the same field
                spec[key] = spec[alt]
            else:
                raise LesionsegError(f"missing required key {key!r}", spec_path)
    channels = _require_object(spec, "channel_names", '{"0": "T1"}', spec_path)
    channel_names = _parse_channels(channels, spec_path)
    raw_labels = _require_object(spec, "labels", '{"background": 0, "lesion": 1}', spec_path)
    labels = _parse_labels(raw_labels, spec_path)
    ending = _optional_string(spec, "file_ending", ".nii.gz", spec_path)
    if ending not in NIFTI_SUFFIXES:
        raise LesionsegError(f"file_ending {ending!r} is not NIfTI (.nii or .nii.gz)", spec_path)
    name = _optional_string(spec, "name", root.name, spec_path)

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
    both = _first_repeat([s.id for s in subjects])  # ids are unique within each folder
    if both is not None:
        raise LesionsegError(f"case {both!r} is in both imagesTr and imagesTs", root)
    _check_num_training(spec, sum(1 for s in subjects if s.split == "train"), spec_path)
    return Dataset(name, channel_names, labels, subjects, root)


def _load_decathlon_v1(root: Path, spec: dict, spec_path: Path) -> Dataset:
    """A Medical Segmentation Decathlon (v1) data set: ``modality`` and file lists.

    Each case is one image (4D when there are several modalities: channel ``i`` is volume
    ``i``) listed in ``training`` (with its label) or ``test``.
    """
    raw_channels = _require_object(spec, "modality", '{"0": "FLAIR"}', spec_path)
    channel_names = _parse_channels(raw_channels, spec_path)
    raw_labels = _require_object(spec, "labels", '{"0": "background", "1": "lesion"}', spec_path)
    labels = _parse_labels(raw_labels, spec_path)
    volumes = {n: i for i, n in enumerate(channel_names)} if len(channel_names) > 1 else {}

    def case(image: object, label: object, split: str) -> Subject:
        if not isinstance(image, str):
            raise LesionsegError(f"{split} entries need an image path, got {image!r}", spec_path)
        path = root / image
        if not path.is_file():
            raise LesionsegError(f"image listed in dataset.json is missing: {image}", spec_path)
        label_path = None
        if label is not None:
            label_path = root / str(label)
            if not label_path.is_file():
                raise LesionsegError(f"label listed in dataset.json is missing: {label}", spec_path)
        sid = strip_nifti_suffix(path.name)
        check_subject_id(sid, path)
        channels = {name: path for name in channel_names}
        return Subject(sid, channels, label_path, None, split, dict(volumes))

    subjects = []
    for entry in spec["training"]:
        if not isinstance(entry, dict):
            raise LesionsegError("training entries must be {image, label}", spec_path)
        subjects.append(case(entry.get("image"), entry.get("label"), "train"))
    for entry in spec.get("test") or []:
        image = entry.get("image") if isinstance(entry, dict) else entry
        subjects.append(case(image, None, "test"))
    if not subjects:
        raise LesionsegError("the training and test lists are empty", spec_path)
    repeated = _first_repeat([s.id for s in subjects])
    if repeated is not None:
        raise LesionsegError(f"case {repeated!r} is listed twice", spec_path)
    name = _optional_string(spec, "name", root.name, spec_path)
    return Dataset(name, channel_names, labels, subjects, root)


def _check_num_training(spec: dict, n_train: int, spec_path: Path) -> None:
    """Raise if dataset.json's ``numTraining`` is not a number or not the number of cases."""
    expected = spec.get("numTraining")
    if expected is None:
        return
    number = _as_int(expected)
    if number is None:
        raise LesionsegError(
            f"numTraining must be a whole number, found {_json_kind(expected)} "
            f"{json.dumps(expected)[:40]}",
            spec_path,
        )
    if number != n_train:
        raise LesionsegError(
            f"numTraining is {expected} but imagesTr holds {n_train} cases", spec_path
        )


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
        check_subject_id(match["case"], path)
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
            for path in sorted(label_folder.iterdir()):
                case = path.name[: -len(ending)]
                if path.name.endswith(ending) and case not in known:
                    raise LesionsegError(f"label map has no images in {images_dir}", path)
        unlabelled = [s.id for s in subjects if s.label is None]
        if unlabelled:
            raise LesionsegError(
                f"training case {unlabelled[0]!r} has no label map {labels_dir}/"
                f"{unlabelled[0]}{ending}",
                root,
            )
    return subjects


def _trim(cells: list[str]) -> list[str]:
    """Cells stripped of spaces, without the empty cells at the end (spreadsheet leftovers)."""
    cells = [c.strip() for c in cells]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def _check_header(columns: list[str], line: int, path: Path) -> None:
    """Raise if a manifest header has an unnamed or repeated column or no subject column."""
    for i, column in enumerate(columns, start=1):
        if not column:
            raise LesionsegError(f"line {line}: column {i} of the header has no name", path)
    repeated = _first_repeat(columns)
    if repeated is not None:
        raise LesionsegError(f"line {line}: column {repeated!r} appears twice in the header", path)
    if "subject" not in columns:
        raise LesionsegError(
            f"manifest needs a 'subject' column (header: {', '.join(columns)})", path
        )


def _read_manifest_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header of a CSV/TSV manifest and its rows with their line numbers.

    Blank lines are skipped (before the header too); a row with more fields than the
    header is an error, a row with fewer has empty cells at the end.
    """
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter)
    columns: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for record in reader:
            cells = _trim(record)
            if not cells:
                continue
            if columns is None:
                _check_header(cells, reader.line_num, path)
                columns = cells
            elif len(cells) > len(columns):
                raise LesionsegError(
                    f"line {reader.line_num}: {len(cells)} fields but the header has "
                    f"{len(columns)} columns",
                    path,
                )
            else:
                rows.append((reader.line_num, dict(zip(columns, cells))))
    except csv.Error as err:
        raise LesionsegError(f"line {reader.line_num}: malformed ({err})", path) from None
    if columns is None:
        raise LesionsegError("manifest is empty", path)
    return columns, rows


def _check_manifest_files(entries: list[tuple[int, Subject]], path: Path) -> None:
    """Raise for the first file a manifest row names that is not an existing file."""
    for line, subject in entries:
        named = {**subject.channels, "label": subject.label, "mask": subject.mask}
        for column, file in named.items():
            if file is not None and not file.is_file():
                problem = "is a folder, not a file" if file.is_dir() else "not found"
                raise LesionsegError(
                    f"line {line}: subject {subject.id!r}: {column} file {file} {problem}", path
                )


@_reading
def load_manifest(
    path: str | Path,
    labels: dict[int, str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Read a CSV or TSV manifest with one row per subject.

    Columns: ``subject`` (required), one column per channel (any other name, in
    file order), optional ``label``, ``mask`` and ``split`` (``train``/``test``).
    Relative paths are taken relative to the manifest's folder. Label names, when
    not given, are ``background`` and ``lesion`` for a binary task. The file must be
    UTF-8 (a byte-order mark is fine); blank lines are skipped.

    Raises:
        LesionsegError: Unreadable or malformed file, missing subject column, repeated
            columns, unsafe or duplicate subject ids, no channels, missing image files.
    """
    path = Path(path)
    if not path.is_file():
        raise LesionsegError("manifest not found", path)
    columns, rows = _read_manifest_rows(path)
    channel_names = [c for c in columns if c not in RESERVED_COLUMNS]
    if not channel_names:
        raise LesionsegError("manifest has no channel columns", path)
    base = path.parent
    entries: list[tuple[int, Subject]] = []
    seen: set[str] = set()
    for line, row in rows:
        sid = check_subject_id(row.get("subject", ""), path, f"line {line}")
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
        entries.append((line, Subject(sid, channels, label, mask, split)))
    if not entries:
        raise LesionsegError("manifest lists no subjects", path)
    # after the whole table is read, so that a mistake in its structure is reported first
    _check_manifest_files(entries, path)
    return Dataset(
        name or path.stem,
        channel_names,
        labels or {0: "background", 1: "lesion"},
        [s for _, s in entries],
        path,
    )


@_reading
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
        subject_id: Case id (default: :func:`subject_name` of the files).

    Raises:
        LesionsegError: No files, a channel given twice, or an unsafe case id.
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
    if not channels:
        raise LesionsegError("no image files given")
    if subject_id is not None:
        check_subject_id(subject_id, where="--name")
    sid = subject_id or subject_name(list(channels.values()))
    return Subject(sid, channels, split="test")


def subject_name(files: Sequence[Path]) -> str:
    """A subject's name from its image files: what their names have in common.

    ``s1_t1.nii.gz`` and ``s1_flair.nii.gz`` → ``s1``; ``sub-01_ses-1_T1w.nii.gz`` and
    ``sub-01_ses-1_FLAIR.nii.gz`` → ``sub-01_ses-1``; ``case_0000.nii.gz`` and
    ``case_0001.nii.gz`` → ``case``. One file, or names with nothing in common: the first
    file's name without its suffix (and without ``_0000``).
    """
    stems = [strip_nifti_suffix(Path(f).name) for f in files]
    if len(stems) > 1:
        common = os.path.commonprefix(stems)
        # cut at the last separator, so that "s1_t1"/"s1_t2" does not give "s1_t"
        cut = max(common.rfind(c) for c in "_-.")
        whole = all(len(s) == len(common) or s[len(common)] in "_-." for s in stems)
        name = common if whole else common[:cut]
        name = name.rstrip("_-.")
        if name:
            return name
    return re.sub(r"_\d{4}$", "", stems[0])


@_reading
def load_dataset(source: str | Path) -> Dataset:
    """Read a data set from a folder with dataset.json or a CSV/TSV manifest.

    Raises:
        LesionsegError: If the source is neither.
    """
    source = Path(source)
    if source.is_dir():
        return load_msd(source)
    if source.suffix.lower() in MANIFEST_SUFFIXES:
        return load_manifest(source)
    if source.name == "dataset.json":
        return load_msd(source.parent)
    if not source.exists():
        raise LesionsegError("data set not found", source)
    raise LesionsegError(
        "not a data set (expected a folder with dataset.json, or a .csv/.tsv manifest)", source
    )
