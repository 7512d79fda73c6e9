"""Atomic file writing: write to a temporary file beside the target, then rename.

A reader never sees a half-written output, and an interrupted run leaves the
previous version (or nothing) in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lesionseg.errors import LesionsegError


@contextlib.contextmanager
def atomic_path(target: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path that is renamed onto ``target`` when the block succeeds.

    The temporary file keeps the target's suffixes (``.nii.gz`` stays ``.nii.gz``)
    so that libraries choosing a format by extension behave.

    Args:
        target: Final path of the file.
        overwrite: If False and ``target`` exists, raise instead of replacing it.

    Raises:
        LesionsegError: If the target exists and ``overwrite`` is False.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise LesionsegError("exists already; use --overwrite to replace it", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give outputs the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: str | Path, text: str, overwrite: bool = True) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target, overwrite=overwrite) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: str | Path, obj: Any, overwrite: bool = True) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False) + "\n", overwrite)
