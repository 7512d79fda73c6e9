"""What lesionseg wrote, and the one way it deletes anything.

Every output folder lesionseg creates (a model folder, a preprocessed cache, a
predictions folder, a phantom data set, an evaluation folder) carries a small marker
file, ``.lesionseg.json``, naming what kind of folder it is. ``--overwrite`` and every
delete go through this module:

* :func:`prepare_output_folder` checks an output folder before any work: it must not
  be a file, must not be (or hold) a folder the command reads, and may only be
  replaced when lesionseg wrote it (marker of the same kind, or the files lesionseg
  writes there for folders made before markers existed); only the entries lesionseg
  writes there are removed, anything else stays.
* :func:`remove_owned` is the only function that deletes (besides a write removing its
  own temporary file when it fails): the path must lie strictly
  inside a folder lesionseg marked (so an id of ``..`` or ``.`` or a symbolic link
  can never reach outside it), or be one of lesionseg's own temporary files.
* :func:`clean_temporaries` removes what a killed run left behind (``.lesionseg-tmp-*``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

from lesionseg.errors import LesionsegError

MARKER_NAME = ".lesionseg.json"
#: Prefix of every temporary file or folder lesionseg creates; nothing else starts with it.
TEMP_PREFIX = ".lesionseg-tmp-"
_OWNER = re.compile(r"^\.lesionseg-tmp-(?P<host>[^@]+)@(?P<pid>\d+)-")


def temp_prefix() -> str:
    """The prefix of this process's temporary files (with its host and process id).

    A run cleaning up after a killed one thus never removes what a live run is writing.
    """
    return f"{TEMP_PREFIX}{socket.gethostname()}@{os.getpid()}-"


def _is_stale(name: str) -> bool:
    """A temporary file whose writer is gone (same host, dead process, or an older name)."""
    match = _OWNER.match(name)
    if match is None:
        return True  # written before names carried their owner
    if match["host"] != socket.gethostname():
        return False  # another machine's run: it may be alive
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False  # the writer is alive


#: How folders written before markers existed are recognised: a file lesionseg always writes
#: there, and (for JSON files) a key it always puts in it.
_LEGACY_SIGNS: dict[str, tuple[str, str | None]] = {
    "cache": ("cache.json", "format"),
    "model": ("run.json", "dataset"),
    "phantoms": ("phantoms.json", None),
}


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def is_inside(path: str | Path, folder: str | Path, *, strictly: bool = False) -> bool:
    """True if ``path`` is ``folder`` or lies below it (links resolved).

    Args:
        path: The path to test.
        folder: The folder.
        strictly: If True, ``folder`` itself does not count.
    """
    p, f = _resolved(path), _resolved(folder)
    if p == f:
        return not strictly
    return f in p.parents


def mark(folder: str | Path, kind: str) -> None:
    """Write the marker that says lesionseg made ``folder`` as a ``kind`` folder."""
    from lesionseg import __version__
    from lesionseg.data.atomic import write_json_atomic

    folder = Path(folder)
    if owner_kind(folder) == kind and (folder / MARKER_NAME).is_file():
        return
    write_json_atomic(folder / MARKER_NAME, {"kind": kind, "lesionseg_version": __version__})


def owner_kind(folder: str | Path) -> str | None:
    """The kind of lesionseg folder ``folder`` is (``"model"``, ``"cache"``, ...), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    marker = folder / MARKER_NAME
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        kind = data.get("kind") if isinstance(data, dict) else None
        return kind if isinstance(kind, str) else None
    for kind, (name, key) in _LEGACY_SIGNS.items():
        sign = folder / name
        if not sign.is_file():
            continue
        if key is None:
            return kind
        try:
            data = json.loads(sign.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and key in data:
            return kind
    return None


def remove_owned(path: str | Path, root: str | Path) -> None:
    """Delete ``path`` (a file or a folder tree): the only delete lesionseg performs.

    Args:
        path: What to delete.
        root: The lesionseg folder it belongs to.

    Raises:
        LesionsegError: ``path`` is not strictly inside ``root``, or ``root`` is not a
            folder lesionseg wrote and ``path`` is not one of its temporary files.
    """
    path, root = Path(path), Path(root)
    # The link itself is what lies inside root; never follow it out of root.
    target = Path(os.path.abspath(path))
    inside = _resolved(target.parent) == _resolved(root) or is_inside(
        target.parent, root, strictly=True
    )
    if not inside or target.name in ("", ".", ".."):
        raise LesionsegError(f"refusing to delete {path}: it is not inside this folder", root)
    is_temporary = target.name.startswith(TEMP_PREFIX)
    if not is_temporary and owner_kind(root) is None:
        raise LesionsegError(
            f"refusing to delete {path.name}: lesionseg did not write this folder", root
        )
    if target.is_symlink() or not target.is_dir():
        target.unlink(missing_ok=True)
    else:
        shutil.rmtree(target)


def clean_temporaries(folder: str | Path, recursive: bool = False) -> int:
    """Remove the temporary files and folders a killed run left in ``folder``.

    Args:
        folder: The output folder.
        recursive: Also in its subfolders (a folder lesionseg wrote whole: a model, a cache).

    Returns:
        How many were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = folder.rglob(f"{TEMP_PREFIX}*") if recursive else folder.glob(f"{TEMP_PREFIX}*")
    stale = sorted(
        (p for p in found if _is_stale(p.name)), key=lambda p: len(p.parts), reverse=True
    )  # deepest first
    for path in stale:
        if path.exists() or path.is_symlink():
            remove_owned(path, path.parent)
    return len(stale)


#: The folders of an MSD / nnU-Net data set whose every file is read as a case.
SCANNED_DATASET_FOLDERS = ("imagesTr", "labelsTr", "masksTr", "imagesTs", "labelsTs", "masksTs")


def scanned_folders(source: str | Path) -> list[Path]:
    """Folders of a data set (or a folder of case files) in which every file is read."""
    source = Path(source)
    if not source.is_dir():
        return []
    if (source / "dataset.json").is_file():
        return [source / name for name in SCANNED_DATASET_FOLDERS]
    return [source]


def check_not_over_inputs(
    folder: str | Path,
    inputs: Iterable[str | Path],
    option: str = "-o",
    scanned: Iterable[str | Path] = (),
) -> None:
    """Refuse an output folder that would replace inputs or be read as inputs.

    Args:
        folder: The output folder.
        inputs: What the command reads (a data set folder or manifest, a cache): the output
            may not be it nor a folder above it.
        option: The option that names the output, for the message (``-o``).
        scanned: Folders in which every file is read as an input (``imagesTr``, ...): the
            output may not lie inside them either.

    Raises:
        LesionsegError: The output would replace or mix with the inputs.
    """
    for item in inputs:
        item = Path(item)
        place = item if item.is_dir() or not item.exists() else item.parent
        if is_inside(place, folder):
            raise LesionsegError(
                f"{option} is the folder that holds the input {item} (or a folder above it); "
                "choose another output folder",
                folder,
            )
    for place in scanned:
        if is_inside(folder, place):
            raise LesionsegError(
                f"{option} lies inside {place}, whose every file is read as an input: outputs "
                "there would break the next command on it; choose a folder outside it",
                folder,
            )


def prepare_output_folder(
    folder: str | Path,
    kind: str,
    *,
    overwrite: bool,
    owned: Sequence[str] = (),
    reusable: bool = False,
    shared: bool = False,
    protect: Iterable[str | Path] = (),
    scanned: Iterable[str | Path] = (),
    option: str = "-o",
) -> Path:
    """Check an output folder before any work, clear what lesionseg wrote there, mark it.

    Args:
        folder: The output folder (created).
        kind: What lesionseg writes there (``"model"``, ``"cache"``, ``"predictions"``, ...).
        overwrite: The user asked to replace an earlier output.
        owned: Names (glob patterns) of the entries lesionseg writes in such a folder; with
            ``overwrite`` these, and only these, are removed.
        reusable: The folder of this kind may be written again without ``overwrite`` (a
            cache, a predictions folder: each file is checked on its own).
        shared: lesionseg may add its files to a non-empty folder it did not write (a
            predictions folder); such a folder is not marked, so nothing in it is ever
            replaced.
        protect: Inputs the command reads; the output may not be them or hold them.
        scanned: Folders whose every file is read; the output may not lie in them.
        option: The option naming the output, for messages.

    Returns:
        The folder.

    Raises:
        LesionsegError: A file in the way, an input in the way, a non-empty folder
            without ``overwrite``, or a folder lesionseg did not write.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LesionsegError(f"{option} names an existing file; give a folder", folder)
    check_not_over_inputs(folder, protect, option, scanned)
    if folder.is_dir():
        entries = [p for p in folder.iterdir() if p.name != MARKER_NAME]
        found = owner_kind(folder)
        if entries and found != kind and shared:
            clean_temporaries(folder)  # only our own names, at the top of a shared folder
            return folder
        if entries and found != kind:
            what = f"a lesionseg {found} folder" if found else "not written by lesionseg"
            raise LesionsegError(
                f"{option} is not empty and is {what}; lesionseg only writes into (and "
                f"replaces) its own {kind} folders: choose another folder",
                folder,
            )
        clean_temporaries(folder, recursive=not shared)  # a folder of ours: what a kill left
        if entries and not reusable:
            if not overwrite:
                raise LesionsegError(
                    f"{option} holds a {kind} already; use --overwrite to replace it", folder
                )
            for pattern in owned:
                for path in sorted(folder.glob(pattern)):
                    remove_owned(path, folder)
    from lesionseg.data.atomic import make_folder

    make_folder(folder)
    mark(folder, kind)
    return folder
