"""Atomic file writing: write to a temporary file beside the target, then rename.

A reader never sees a half-written output, and an interrupted run leaves the
previous version (or nothing) in place, plus at most a temporary file whose name
starts with :data:`~lesionseg.data.ownership.TEMP_PREFIX`, removed by the next run.
A full, read-only or forbidden output disk becomes one clear error naming the path
(and, for a full disk, the space needed and the space free).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lesionseg.data.ownership import temp_prefix
from lesionseg.errors import LesionsegError

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


def _free_bytes(path: Path) -> int | None:
    for place in (path, *path.parents):
        if place.exists():
            try:
                return shutil.disk_usage(place).free
            except OSError:
                return None
    return None


def disk_error(err: OSError, target: str | Path, needed: int | None = None) -> LesionsegError:
    """The one clear line for an operating-system error met while writing ``target``.

    Args:
        err: The error.
        target: The output being written (named in the message).
        needed: Bytes the write needs, when known (said for a full disk).
    """
    target = Path(target)
    free = _free_bytes(target)
    # numpy reports a short write as a plain OSError("... requested and ... written")
    short_write = err.errno is None and free is not None and free < (needed or 1 << 20)
    if err.errno in _DISK_FULL or short_write:
        need = f"needs about {_size(needed)}" if needed else "needs more space"
        have = f", {_size(free)} free" if free is not None else ""
        return LesionsegError(
            f"cannot write: no space left on the device (it {need}{have})", target
        )
    if err.errno == errno.EROFS:
        return LesionsegError("cannot write: the file system is read-only", target)
    if err.errno in (errno.EACCES, errno.EPERM):
        return LesionsegError("cannot write: permission denied", target)
    reason = err.strerror or str(err) or type(err).__name__
    return LesionsegError(f"cannot write ({reason})", target)


@contextlib.contextmanager
def writing(target: str | Path, needed: int | None = None) -> Iterator[None]:
    """Turn operating-system errors inside the block into one clear error about ``target``."""
    try:
        yield
    except LesionsegError:
        raise
    except OSError as err:
        raise disk_error(err, target, needed) from None


def make_folder(folder: str | Path) -> Path:
    """``mkdir -p`` with a clear error (read-only disk, a file in the way, no permission)."""
    folder = Path(folder)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def atomic_path(
    target: str | Path, overwrite: bool = True, needed: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path that is renamed onto ``target`` when the block succeeds.

    The temporary file keeps the target's suffixes (``.nii.gz`` stays ``.nii.gz``)
    so that libraries choosing a format by extension behave.

    Args:
        target: Final path of the file.
        overwrite: If False and ``target`` exists, raise instead of replacing it.
        needed: Bytes the file will take, when known (reported if the disk is full).

    Raises:
        LesionsegError: If the target exists and ``overwrite`` is False, or the disk
            refuses the write.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise LesionsegError("exists already; use --overwrite to replace it", target)
    if target.is_dir():
        raise LesionsegError("is a folder; cannot write a file there", target)
    make_folder(target.parent)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    with writing(target, needed):
        fd, tmp_name = tempfile.mkstemp(
            prefix=f"{temp_prefix()}{target.stem}.", suffix=suffix, dir=target.parent
        )
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with writing(target, needed):
            # mkstemp creates 0600 files; give outputs the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            yield tmp
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: str | Path, text: str, overwrite: bool = True) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target, overwrite=overwrite, needed=len(text.encode())) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: str | Path, obj: Any, overwrite: bool = True) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False) + "\n", overwrite)
