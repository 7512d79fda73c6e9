"""BIDS data sets: a model's inputs found with pybids, and its outputs as BIDS derivatives.

Inputs. pybids indexes the raw data set (``anat`` and ``dwi`` images, ``.nii``/``.nii.gz``)
and each of the model's channels is matched to one file of a subject (and session) by
its suffix and entities. The usual channel names need no help (:data:`CHANNEL_ALIASES`):

==================================  =====================================================
model channel                       BIDS file
==================================  =====================================================
``T1``, ``T1w``                     ``*_T1w`` without a ``ce-`` entity
``T1c``, ``T1ce``, ``T1Gd``, ...    ``*_ce-<agent>_T1w`` (any contrast agent)
``T2``, ``T2w``; ``PD``, ``PDw``    ``*_T2w``; ``*_PDw``
``FLAIR``                           ``*_FLAIR``
``DWI``                             ``dwi/*_dwi`` except ``acq-ADC`` (a 3D trace image)
``ADC``                             ``dwi/*_acq-ADC_dwi`` (the scanner's ADC map), or a
                                    file with suffix ``ADC`` (dcm2niix's ``*_dwi_ADC``)
anything else                       the suffix of the same name
==================================  =====================================================

Suffixes and labels are compared ignoring case. ``--channel-map NAME=SPEC`` names the file
of any other channel, ``SPEC`` being a suffix with optional entities
(``ce-gadolinium_T1w``, ``acq-b1000_dwi``). Several files for one channel that differ only
in ``run`` give the last run (a repeat is usually taken because an earlier run failed);
files that differ in other entities are an error naming the entities to filter on.

Outputs: a BIDS-derivatives data set. For a two-class model, per subject [and session]::

    sub-<l>[/ses-<s>]/<datatype>/sub-<l>[_ses-<s>]_space-orig_label-lesion_desc-<m>_mask.nii.gz
    ..._space-orig_label-lesion_desc-<m>_probseg.nii.gz     (lesion probability, 3D)

and for more classes ``..._space-orig_desc-<m>_dseg.nii.gz`` (labels, listed in
``desc-<m>_dseg.tsv`` at the top) and ``..._space-orig_desc-<m>_probseg.nii.gz`` (4D, one
map per class in that order). ``<datatype>`` is that of the model's first channel
(``anat``, or ``dwi`` for DWI-based models); each image has a JSON sidecar with
``Sources`` and ``SpatialReference`` as BIDS URIs (``bids:raw:sub-01/anat/...``; ``raw`` is
defined in ``DatasetLinks`` of ``dataset_description.json``), which the validator
requires for the non-template space ``orig`` (the input's own grid).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lesionseg.errors import LesionsegError

if TYPE_CHECKING:
    from bids import BIDSLayout

#: The BIDS version the files lesionseg writes follow.
BIDS_VERSION = "1.10.0"
#: Folders (BIDS data types) searched for a model's inputs.
INPUT_DATATYPES = ("anat", "dwi")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
#: BIDS entity key → pybids' name for it (pybids' ``bids`` configuration).
ENTITY_KEYS = {
    "task": "task",
    "acq": "acquisition",
    "ce": "ceagent",
    "trc": "tracer",
    "rec": "reconstruction",
    "dir": "direction",
    "run": "run",
    "mod": "modality",
    "echo": "echo",
    "flip": "flip",
    "inv": "inv",
    "mt": "mt",
    "part": "part",
    "proc": "proc",
}
#: Order of entities in the file names lesionseg writes (the BIDS entity table's order).
ENTITY_ORDER = ("sub", "ses", *ENTITY_KEYS, "space", "res", "den", "label", "desc")
#: The output's space: the input's own grid (not a template).
SPACE = "orig"
#: Name of the input data set in BIDS URIs (``bids:raw:sub-01/...``) and ``DatasetLinks``.
RAW_LINK = "raw"
#: What the output folder is, for ``.lesionseg.json`` (``--overwrite`` replaces only it).
DERIVATIVES_KIND = "bids-derivatives"
_LABEL = re.compile(r"[A-Za-z0-9]+")


# ------------------------------------------------------------------------------- file names


def bids_name(entities: Mapping[str, str | None], suffix: str, extension: str = ".nii.gz") -> str:
    """A BIDS file name, entities in BIDS order: ``sub-01_space-orig_desc-x_mask.nii.gz``.

    Args:
        entities: Entity key (``sub``, ``ses``, ``acq``, ...) → label; None leaves it out.
        suffix: The suffix (``mask``, ``T1w``).
        extension: The extension, with its dot.

    Raises:
        ValueError: An entity key lesionseg does not write.
    """
    unknown = sorted(set(entities) - set(ENTITY_ORDER))
    if unknown:
        raise ValueError(f"unknown BIDS entities {unknown}")
    parts = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if entities.get(key) is not None]
    return "_".join([*parts, suffix]) + extension


def check_label(label: str, what: str) -> str:
    """Return ``label`` if it is a BIDS label (letters and digits only).

    Raises:
        LesionsegError: Naming ``what`` (the option or field) otherwise.
    """
    if not _LABEL.fullmatch(label):
        raise LesionsegError(f"{what}: {label!r} is not a BIDS label (letters and digits only)")
    return label


def strip_labels(labels: Sequence[str] | None, prefix: str, option: str) -> list[str] | None:
    """Labels given on the command line, with or without their prefix (``sub-01`` or ``01``).

    Args:
        labels: The labels, or None (not given).
        prefix: ``sub`` or ``ses``.
        option: The option, for messages.

    Raises:
        LesionsegError: A label that is not letters and digits.
    """
    if labels is None:
        return None
    start = f"{prefix}-"
    return [check_label(x[len(start) :] if x.startswith(start) else x, option) for x in labels]


def method_label(recipe_name: str | None, variant: str | None, fallback: str) -> str:
    """The ``desc-`` label of a model's outputs: its recipe name (and variant), alphanumeric.

    ``deepmedic-tiny`` gives ``deepmedictiny``; ``msseg-paper`` with ``--variant gated``
    gives ``mssegpapergated``, so that two variants never write the same files.

    Args:
        recipe_name: The model's recipe name, or None.
        variant: The prediction variant, or None.
        fallback: Used when the recipe has no usable name (e.g. the model folder's name).
    """
    base = re.sub(r"[^A-Za-z0-9]", "", recipe_name or "") or re.sub(r"[^A-Za-z0-9]", "", fallback)
    return (base or "lesionseg") + re.sub(r"[^A-Za-z0-9]", "", variant or "")


@dataclass(frozen=True)
class Visit:
    """One subject, or one session of a subject: what one prediction is made for.

    Attributes:
        subject: The subject label (without ``sub-``).
        session: The session label (without ``ses-``), or None.
    """

    subject: str
    session: str | None = None

    @property
    def entities(self) -> dict[str, str | None]:
        """``{"sub": ..., "ses": ...}`` for :func:`bids_name`."""
        return {"sub": self.subject, "ses": self.session}

    @property
    def id(self) -> str:
        """``sub-01`` or ``sub-01_ses-1``: a case id and the start of its file names."""
        return "_".join(f"{k}-{v}" for k, v in self.entities.items() if v is not None)

    @property
    def folder(self) -> Path:
        """``sub-01`` or ``sub-01/ses-1``, relative to a data set's root."""
        top = Path(f"sub-{self.subject}")
        return top / f"ses-{self.session}" if self.session else top

    def __str__(self) -> str:
        return self.id.replace("_", " ")


def derivative_paths(
    out: Path, visit: Visit, datatype: str, desc: str, binary: bool
) -> tuple[Path, Path]:
    """Where a visit's label image and probability image go in the derivatives folder.

    Args:
        out: The derivatives folder.
        visit: The subject [and session].
        datatype: Its folder (``anat``, ``dwi``).
        desc: The method label.
        binary: A two-class model (a lesion ``mask``); else a ``dseg``.

    Returns:
        The label image and the probability image.
    """
    folder = out / visit.folder / datatype
    base = {**visit.entities, "space": SPACE, "desc": desc}
    if binary:
        base["label"] = "lesion"
        return folder / bids_name(base, "mask"), folder / bids_name(base, "probseg")
    return folder / bids_name(base, "dseg"), folder / bids_name(base, "probseg")


def sidecar_path(image: Path) -> Path:
    """The JSON sidecar of an image (``x.nii.gz`` → ``x.json``)."""
    name = image.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
    return image.with_name(stem + ".json")


def label_table(labels: Mapping[Any, str]) -> list[tuple[int, str]]:
    """A model's labels (``config["labels"]``: value → name) as sorted (index, name) pairs."""
    return sorted((int(value), str(name)) for value, name in labels.items())


def is_binary(labels: Mapping[Any, str]) -> bool:
    """True for a background/lesion model (a mask); False for several classes (a dseg)."""
    return [index for index, _ in label_table(labels)] == [0, 1]


# ------------------------------------------------------------------------ channel matching


@dataclass(frozen=True)
class BidsImage:
    """One image of a BIDS data set.

    Attributes:
        path: The file.
        relpath: Its path relative to the data set's root, with ``/`` (for BIDS URIs).
        suffix: Its suffix (``T1w``, ``dwi``).
        datatype: Its folder (``anat``, ``dwi``), or None.
        entities: BIDS entity key (``acq``, ``ce``, ``run``, ...) → label, without ``sub``
            and ``ses``.
    """

    path: Path
    relpath: str
    suffix: str
    datatype: str | None = None
    entities: Mapping[str, str] = field(default_factory=dict)


def _same(label: str) -> str:
    """A label as compared: lower case, and numbers without leading zeros (``run-01`` = 1)."""
    return str(int(label)) if label.isdigit() else label.lower()


@dataclass(frozen=True)
class ChannelQuery:
    """Which files can hold a channel: a suffix and conditions on entities.

    Suffixes and labels are compared ignoring case (converters spell them differently).

    Attributes:
        suffix: The BIDS suffix.
        labels: (entity, label) pairs the file must have.
        present: Entities the file must have, with any label.
        absent: Entities the file must not have.
        exclude: (entity, label) pairs the file must not have.
    """

    suffix: str
    labels: tuple[tuple[str, str], ...] = ()
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    exclude: tuple[tuple[str, str], ...] = ()

    def matches(self, image: BidsImage) -> bool:
        """True if ``image`` can be this channel."""
        found = {k: _same(v) for k, v in image.entities.items()}
        return (
            image.suffix.lower() == self.suffix.lower()
            and all(found.get(k) == _same(v) for k, v in self.labels)
            and all(k in found for k in self.present)
            and not any(k in found for k in self.absent)
            and not any(found.get(k) == _same(v) for k, v in self.exclude)
        )

    def describe(self) -> str:
        """The files it matches, for messages: ``*_ce-<any>_T1w``."""
        parts = [f"{k}-{v}" for k, v in self.labels] + [f"{k}-<any>" for k in self.present]
        text = "_".join(["*", *parts, self.suffix])
        notes = [f"no {k}-" for k in self.absent] + [f"not {k}-{v}" for k, v in self.exclude]
        return f"{text} ({', '.join(notes)})" if notes else text


_T1 = (ChannelQuery("T1w", absent=("ce",)),)
_T1C = (ChannelQuery("T1w", present=("ce",)),)
_T2 = (ChannelQuery("T2w"),)
_PD = (ChannelQuery("PDw"),)
_FLAIR = (ChannelQuery("FLAIR"),)
_DWI = (ChannelQuery("dwi", exclude=(("acq", "adc"),)),)
_ADC = (ChannelQuery("dwi", labels=(("acq", "adc"),)), ChannelQuery("ADC"))

#: Model channel name (lower case, letters and digits only) → the files that hold it.
CHANNEL_ALIASES: dict[str, tuple[ChannelQuery, ...]] = {
    "t1": _T1,
    "t1w": _T1,
    "t1c": _T1C,
    "t1ce": _T1C,
    "t1gd": _T1C,
    "t1wce": _T1C,
    "t1post": _T1C,
    "t2": _T2,
    "t2w": _T2,
    "pd": _PD,
    "pdw": _PD,
    "flair": _FLAIR,
    "t2flair": _FLAIR,
    "dwi": _DWI,
    "trace": _DWI,
    "adc": _ADC,
}


def _alias_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def parse_channel_spec(channel: str, spec: str) -> ChannelQuery:
    """A ``--channel-map`` file spec: ``SUFFIX`` or ``key-label_..._SUFFIX``.

    Raises:
        LesionsegError: A bad spec, or an entity key lesionseg does not know.
    """
    option = f"--channel-map {channel}={spec}"
    *pairs, suffix = spec.split("_")
    check_label(suffix, f"{option}: suffix")
    labels = []
    for pair in pairs:
        key, _, label = pair.partition("-")
        if key not in ENTITY_KEYS:
            known = ", ".join(ENTITY_KEYS)
            raise LesionsegError(f"{option}: {pair!r} is not key-label with a key of {known}")
        labels.append((key, check_label(label, f"{option}: {key}")))
    return ChannelQuery(suffix, labels=tuple(labels))


def parse_channel_map(items: Sequence[str]) -> dict[str, ChannelQuery]:
    """``--channel-map NAME=SPEC ...`` as channel name → query.

    Raises:
        LesionsegError: An item without ``=``, a bad spec, or a channel given twice.
    """
    mapping: dict[str, ChannelQuery] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise LesionsegError(
                f"--channel-map {item!r}: expected NAME=SUFFIX or NAME=key-label_SUFFIX "
                "(e.g. T1c=ce-gadolinium_T1w)"
            )
        if name in mapping:
            raise LesionsegError(f"--channel-map: channel {name!r} is given twice")
        mapping[name] = parse_channel_spec(name, spec)
    return mapping


def channel_queries(
    channel: str, channel_map: Mapping[str, ChannelQuery] | None = None
) -> tuple[ChannelQuery, ...]:
    """The files that can hold a model's channel: ``--channel-map``'s, an alias's, or its name."""
    if channel_map and channel in channel_map:
        return (channel_map[channel],)
    return CHANNEL_ALIASES.get(_alias_key(channel), (ChannelQuery(channel),))


def matching_images(
    queries: Sequence[ChannelQuery], images: Sequence[BidsImage]
) -> list[BidsImage]:
    """The images any of ``queries`` matches, in their order."""
    return [image for image in images if any(q.matches(image) for q in queries)]


def _run_number(image: BidsImage) -> int:
    run = image.entities.get("run", "0")
    return int(run) if run.isdigit() else 0


def _differing_entities(images: Sequence[BidsImage]) -> list[str]:
    """Entities (and the suffix or extension) whose labels differ among ``images``."""
    keys = sorted({k for image in images for k in image.entities})
    differ = [k for k in keys if len({image.entities.get(k) for image in images}) > 1]
    if len({image.suffix for image in images}) > 1:
        differ.append("suffix")
    if not differ:  # the same name with .nii and .nii.gz
        differ.append("extension")
    return differ


def choose_image(
    visit: Visit, channel: str, queries: Sequence[ChannelQuery], candidates: Sequence[BidsImage]
) -> tuple[BidsImage, str | None]:
    """The one file of a channel, and a note when a run was chosen.

    Raises:
        LesionsegError: No file, or several that differ in more than their run.
    """
    if not candidates:
        looked = " or ".join(q.describe() for q in queries)
        raise LesionsegError(
            f"{visit}: no image for the model's channel {channel} (looked for {looked} in "
            f"{'/'.join(INPUT_DATATYPES)}); name its file with --channel-map {channel}=SUFFIX"
        )
    if len(candidates) == 1:
        return candidates[0], None
    differ = _differing_entities(candidates)
    if differ == ["run"]:
        chosen = max(candidates, key=_run_number)
        note = f"{visit}: {len(candidates)} runs for {channel}; using the last, {chosen.relpath}"
        return chosen, note
    names = ", ".join(image.path.name for image in candidates)
    raise LesionsegError(
        f"{visit}: {len(candidates)} images match the model's channel {channel} ({names}); "
        f"they differ in {', '.join(differ)}: pick one with --channel-map "
        f"{channel}=<key>-<label>_{candidates[0].suffix}"
    )


def match_channels(
    visit: Visit,
    channels: Sequence[str],
    images: Sequence[BidsImage],
    channel_map: Mapping[str, ChannelQuery] | None = None,
) -> tuple[dict[str, BidsImage], list[str]]:
    """Match a model's channels to a visit's images, one file each.

    Args:
        visit: The subject [and session], for messages.
        channels: The model's channel names.
        images: The visit's images.
        channel_map: ``--channel-map`` queries, by channel.

    Returns:
        Channel → image, in ``channels`` order, and notes on the choices made.

    Raises:
        LesionsegError: A channel without a file, one with several, or one file for two
            channels.
    """
    chosen: dict[str, BidsImage] = {}
    notes: list[str] = []
    for channel in channels:
        queries = channel_queries(channel, channel_map)
        image, note = choose_image(visit, channel, queries, matching_images(queries, images))
        chosen[channel] = image
        notes += [note] if note else []
    by_file: dict[Path, str] = {}
    for channel, image in chosen.items():
        if image.path in by_file:
            raise LesionsegError(
                f"{visit}: {image.relpath} matches both channels {by_file[image.path]} and "
                f"{channel}; tell them apart with --channel-map"
            )
        by_file[image.path] = channel
    return chosen, notes


# ------------------------------------------------------------------------- pybids: inputs


def load_layout(bids_dir: str | Path) -> BIDSLayout:
    """Index a BIDS data set with pybids (file names only, no metadata; fast).

    The index is not filtered by pybids' validator, so data sets with a few non-standard
    files (``*_dwi_ADC.nii.gz``) still work; ``derivatives/`` is left out.

    Raises:
        LesionsegError: pybids missing, or a folder that is not a BIDS data set.
    """
    root = Path(bids_dir)
    if not root.is_dir():
        raise LesionsegError("BIDS_DIR not found (or not a folder)", root)
    if not (root / "dataset_description.json").is_file():
        raise LesionsegError("no dataset_description.json: not a BIDS data set", root)
    try:
        from bids import BIDSLayout, BIDSLayoutIndexer
    except ImportError:
        raise LesionsegError("lesionseg bids needs pybids: pip install 'lesionseg[bids]'") from None
    indexer = BIDSLayoutIndexer(validate=False, index_metadata=False)
    try:
        return BIDSLayout(root, validate=False, indexer=indexer)
    except (ValueError, OSError) as err:  # pybids' BIDSValidationError is a ValueError
        raise LesionsegError(f"pybids cannot read this data set ({err})", root) from None


def _pick(found: Sequence[str], wanted: Sequence[str] | None, what: str, root: Path) -> list[str]:
    """``wanted`` (all of which must be in ``found``), or every one of ``found``."""
    if wanted is None:
        return sorted(found)
    missing = [x for x in wanted if x not in found]
    if missing:
        known = ", ".join(sorted(found)[:20]) or "none"
        raise LesionsegError(f"no {what} {', '.join(missing)} in this data set ({known})", root)
    return list(dict.fromkeys(wanted))


def select_visits(
    layout: BIDSLayout,
    participants: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
) -> list[Visit]:
    """The subjects [and sessions] to predict: those asked for, or all.

    A subject without sessions is one visit; with sessions, each session is one (only
    those in ``sessions`` when given).

    Raises:
        LesionsegError: No subjects, or a label the data set does not have.
    """
    root = Path(layout.root)
    subjects = _pick(layout.get_subjects(), participants, "participant", root)
    if not subjects:
        raise LesionsegError("no sub-* folders: the data set has no subjects", root)
    if sessions is not None:
        _pick(layout.get_sessions(subject=subjects), sessions, "session", root)
    visits = []
    for subject in subjects:
        found = sorted(layout.get_sessions(subject=subject))
        kept = [s for s in found if sessions is None or s in sessions]
        if not found and sessions is None:
            visits.append(Visit(subject))
        visits += [Visit(subject, s) for s in kept]
    return visits


def _entities(layout_entities: Mapping[str, Any]) -> dict[str, str]:
    """The entities pybids found in a file name, as BIDS keys (``acquisition`` → ``acq``)."""
    names = {long: short for short, long in ENTITY_KEYS.items()}
    return {names[k]: str(v) for k, v in layout_entities.items() if k in names}


def visit_images(layout: BIDSLayout, visit: Visit) -> list[BidsImage]:
    """The NIfTI images of a visit in its ``anat`` and ``dwi`` folders."""
    from bids.layout import Query

    files = layout.get(
        subject=visit.subject,
        session=visit.session or Query.NONE,
        datatype=list(INPUT_DATATYPES),
        extension=list(NIFTI_EXTENSIONS),
        return_type="object",
    )
    root = Path(layout.root)
    images = []
    for file in sorted(files, key=lambda f: f.path):
        entities = file.get_entities()
        images.append(
            BidsImage(
                path=Path(file.path),
                relpath=Path(file.path).relative_to(root).as_posix(),
                suffix=str(entities.get("suffix", "")),
                datatype=entities.get("datatype"),
                entities=_entities(entities),
            )
        )
    return images


@dataclass(frozen=True)
class VisitInputs:
    """The files of one visit, matched to the model's channels.

    Attributes:
        visit: The subject [and session].
        channels: Channel → image, in the model's channel order.
        notes: Choices made (which run), to tell the user.
    """

    visit: Visit
    channels: dict[str, BidsImage]
    notes: tuple[str, ...] = ()

    @property
    def datatype(self) -> str:
        """The output's folder: that of the first channel (``anat``, or ``dwi``)."""
        return next(iter(self.channels.values())).datatype or "anat"

    def sources(self) -> list[str]:
        """BIDS URIs of the input files, in channel order."""
        return [f"bids:{RAW_LINK}:{image.relpath}" for image in self.channels.values()]


def find_inputs(
    layout: BIDSLayout,
    visits: Sequence[Visit],
    channels: Sequence[str],
    channel_map: Mapping[str, ChannelQuery] | None = None,
) -> list[VisitInputs]:
    """Match every visit's files to the model's channels, before any work is done.

    Raises:
        LesionsegError: The first visit whose files do not match (see
            :func:`match_channels`).
    """
    found = []
    for visit in visits:
        chosen, notes = match_channels(visit, channels, visit_images(layout, visit), channel_map)
        found.append(VisitInputs(visit, chosen, tuple(notes)))
    return found


# ----------------------------------------------------------------- the derivatives folder


def dataset_link(out: Path, bids_dir: Path) -> str:
    """How the derivatives refer to the raw data set (``DatasetLinks``).

    A relative path when they lie inside it (the BIDS-Apps layout
    ``BIDS_DIR/derivatives/NAME``, which moves with it), else a ``file://`` URI.
    """
    out, raw = Path(os.path.abspath(out)), Path(os.path.abspath(bids_dir))
    if raw in out.parents:
        return Path(os.path.relpath(raw, out)).as_posix()
    return raw.as_uri()


def prepare_derivatives(out_dir: str | Path, bids_dir: str | Path, overwrite: bool) -> Path:
    """Check and mark the output folder before any work.

    It must be empty or a derivatives folder lesionseg wrote (which may get more subjects
    without ``--overwrite``; each output is checked on its own), must not be or hold the
    raw data set, and inside it may only be a folder in ``derivatives/`` (elsewhere its
    files would be read as raw data). A folder holding derivatives of another data set is refused.

    Raises:
        LesionsegError: Naming the folder and the problem.
    """
    from lesionseg.data.ownership import is_inside, prepare_output_folder

    out, raw = Path(out_dir), Path(bids_dir)
    inside = is_inside(out, raw, strictly=True)
    if inside and not is_inside(out, raw / "derivatives", strictly=True):
        raise LesionsegError(
            "OUTPUT_DIR lies inside BIDS_DIR but not in a folder of its derivatives/, so its "
            "files would be read as raw data; use BIDS_DIR/derivatives/lesionseg or a folder "
            "outside BIDS_DIR",
            out,
        )
    description = out / "dataset_description.json"
    if description.is_file():
        links = _read_json(description).get("DatasetLinks")
        link = links.get(RAW_LINK) if isinstance(links, dict) else None
        if link is not None and link != dataset_link(out, raw):
            raise LesionsegError(
                f"holds derivatives of another data set ({link}); choose another OUTPUT_DIR",
                out,
            )
    return prepare_output_folder(
        out,
        DERIVATIVES_KIND,
        overwrite=overwrite,
        reusable=True,
        protect=[raw],
        option="OUTPUT_DIR",
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LesionsegError(f"cannot read it ({type(err).__name__})", path) from None
    if not isinstance(data, dict):
        raise LesionsegError("must hold a JSON object", path)
    return data


def _generated_by(out: Path, entry: dict) -> list[dict]:
    """``GeneratedBy``: earlier runs' entries, then this run's (not repeated).

    Several models may write into one derivatives folder (each with its ``desc``).
    """
    path = out / "dataset_description.json"
    earlier = _read_json(path).get("GeneratedBy") if path.is_file() else None
    kept = [e for e in earlier or [] if isinstance(e, dict) and e != entry]
    return [*kept, entry] if isinstance(earlier, list) else [entry]


def derivative_description(out: Path, bids_dir: Path, description: str) -> dict:
    """``dataset_description.json`` of the derivatives.

    Args:
        out: The derivatives folder (an earlier description there keeps its
            ``GeneratedBy`` entries: each model adds its own).
        bids_dir: The raw data set (named ``raw`` in ``DatasetLinks``).
        description: What made the outputs (model and options), for ``GeneratedBy``.
    """
    from lesionseg import __version__

    entry = {"Name": "lesionseg", "Version": __version__, "Description": description}
    source: dict[str, str] = {"URL": f"bids:{RAW_LINK}:"}
    raw = bids_dir / "dataset_description.json"
    doi = _read_json(raw).get("DatasetDOI") if raw.is_file() else None
    if isinstance(doi, str) and doi:
        source["DOI"] = doi
    return {
        "Name": "lesionseg lesion segmentations",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": _generated_by(out, entry),
        "SourceDatasets": [source],
        "DatasetLinks": {RAW_LINK: dataset_link(out, bids_dir)},
    }


def write_label_table(out: Path, desc: str, labels: Mapping[Any, str]) -> Path:
    """``desc-<m>_dseg.tsv`` at the top of the derivatives: index and name of each class.

    It applies to every ``*_desc-<m>_dseg.nii.gz`` below (BIDS inheritance).
    """
    from lesionseg.data.atomic import write_text_atomic

    rows = ["index\tname", *(f"{i}\t{name}" for i, name in label_table(labels))]
    path = out / bids_name({"desc": desc}, "dseg", ".tsv")
    write_text_atomic(path, "\n".join(rows) + "\n")
    return path


@dataclass(frozen=True)
class OutputPlan:
    """What lesionseg writes for one visit.

    Attributes:
        root: The derivatives folder.
        inputs: The visit's matched inputs.
        labels: The label image (``_mask`` or ``_dseg``).
        probabilities: The probability image (``_probseg``), or None.
        stale: Earlier outputs of the same visit and method this run does not write
            (removed with ``--overwrite``, so that none is left from another setting).
    """

    root: Path
    inputs: VisitInputs
    labels: Path
    probabilities: Path | None
    stale: tuple[Path, ...] = ()

    def files(self) -> list[Path]:
        """Every file written: images and their sidecars."""
        return with_sidecars([p for p in (self.labels, self.probabilities) if p is not None])


def with_sidecars(images: Sequence[Path]) -> list[Path]:
    """Each image followed by its JSON sidecar."""
    return [f for image in images for f in (image, sidecar_path(image))]


def plan_outputs(
    out: Path,
    inputs: Sequence[VisitInputs],
    desc: str,
    binary: bool,
    save_probabilities: bool,
    overwrite: bool,
) -> list[OutputPlan]:
    """The outputs of every visit, checked before any work.

    Raises:
        LesionsegError: An output that exists already, without ``overwrite``.
    """
    plans = []
    for item in inputs:
        labels, probabilities = derivative_paths(out, item.visit, item.datatype, desc, binary)
        wanted = with_sidecars([labels, probabilities] if save_probabilities else [labels])
        for path in wanted:
            if path.exists() and not overwrite:
                raise LesionsegError("exists already; use --overwrite to replace it", path)
        other = derivative_paths(out, item.visit, item.datatype, desc, not binary)
        possible = with_sidecars([labels, probabilities, *other])
        stale = tuple(p for p in possible if p not in wanted and p.exists())
        kept = probabilities if save_probabilities else None
        plans.append(OutputPlan(out, item, labels, kept, stale))
    return plans


def _sidecar(plan: OutputPlan, description: str, **extra: Any) -> dict:
    """The JSON sidecar of an output image."""
    inputs = plan.inputs
    return {
        "Description": description,
        "Sources": inputs.sources(),
        # every output is on the grid of the model's first channel (its preprocessing record)
        "SpatialReference": inputs.sources()[0],
        **extra,
    }


def store_outputs(
    plan: OutputPlan,
    segmentation: Path,
    probabilities: Path | None,
    binary: bool,
    method: str,
    labels: Mapping[Any, str],
) -> list[Path]:
    """Move a visit's predictions to their BIDS names and write their sidecars.

    Args:
        plan: The visit's outputs.
        segmentation: The label map the prediction wrote (``<id>_seg.nii.gz``), in a folder
            on the same disk (it is renamed, atomically).
        probabilities: Its per-class probabilities (``<id>_prob.nii.gz``), or None.
        binary: A two-class model (the lesion map alone goes to ``probseg``).
        method: The model, for the sidecars' ``Description``.
        labels: The model's labels (value → name).

    Returns:
        The files written.
    """
    from lesionseg.data.atomic import make_folder, write_json_atomic, writing
    from lesionseg.data.ownership import remove_owned

    make_folder(plan.labels.parent)
    with writing(plan.labels):
        os.replace(segmentation, plan.labels)
    kind = "Lesion mask" if binary else "Label map (classes in the dseg.tsv)"
    extra = {"Type": "Lesion"} if binary else {}
    text = f"{kind} predicted by lesionseg ({method})"
    write_json_atomic(sidecar_path(plan.labels), _sidecar(plan, text, **extra))
    if plan.probabilities is not None and probabilities is not None:
        _store_probabilities(probabilities, plan.probabilities, plan.labels, binary)
        what = "Lesion probability" if binary else "Probability of each class (4th axis)"
        order = "" if binary else ": " + ", ".join(name for _, name in label_table(labels))
        write_json_atomic(
            sidecar_path(plan.probabilities),
            _sidecar(plan, f"{what} predicted by lesionseg ({method}){order}"),
        )
    for path in plan.stale:
        remove_owned(path, plan.root)
    return plan.files()


def _store_probabilities(source: Path, target: Path, labels_image: Path, binary: bool) -> None:
    """The probabilities at their BIDS name: all maps, or the lesion map alone (3D)."""
    from lesionseg.data.atomic import writing

    if not binary:
        with writing(target):
            os.replace(source, target)
        return
    import nibabel as nib
    import numpy as np

    from lesionseg.data.nifti import load_nifti, save_nifti

    lesion = np.asarray(nib.load(str(source)).dataobj[..., 1], dtype=np.float32)
    # the label image was written on the input grid with its header: the right 3D grid
    save_nifti(lesion, load_nifti(labels_image, dtype=None).grid, target)
