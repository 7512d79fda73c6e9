"""The table-driven harness of the safety tests: one bad input (or fault) per case.

A case builds its own small files inside a work folder, names the command line to run and
the output folder that command may write in, and says which words the one error line must
contain. The harness runs the command in-process, then checks: exit status 2, exactly one
``lesionseg CMD: error:`` line holding every expected word, no traceback, and that nothing
outside the output folder was created, changed or removed (every file under the work folder
is hashed before and after).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: ``setup(work, monkeypatch) -> (argv, output folder or None)``
Setup = Callable[[Path, pytest.MonkeyPatch], tuple[list[str], Path | None]]


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: Short name shown by pytest.
        point: Which point of the safety issue it covers (1-9).
        setup: Makes the files and returns the command line and the output folder.
        words: Words the error line must contain (the file or option, and the problem).
        code: Expected exit status.
        allowed: Paths (relative to the work folder) a case may create besides the output.
    """

    id: str
    point: int
    setup: Setup
    words: tuple[str, ...] = ()
    code: int = 2
    allowed: tuple[str, ...] = field(default=())


def snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Hash of every file and folder under ``root`` except those under ``skip``."""
    state = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = "link:" + str(path.readlink())
        elif path.is_dir():
            state[rel] = "dir"
        else:
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def unmount_below(folder: Path) -> None:
    """Unmount the small disks (tmpfs) a case mounted inside its work folder."""
    import subprocess

    places = []
    with open("/proc/mounts") as mounts:
        for line in mounts:
            place = Path(line.split()[1])
            if place == folder or folder in place.parents:
                places.append(place)
    for place in sorted(places, key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", str(place)], check=False)


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that report an error (progress bars may stand around them)."""
    return [ln for ln in stderr.replace("\r", "\n").splitlines() if "error:" in ln]


def run_case(case: Case, work: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> str:
    """Run ``case`` in ``work`` and assert the safety contract; returns the error line."""
    from lesionseg.cli.main import main

    work.mkdir(parents=True, exist_ok=True)
    try:
        argv, output = case.setup(work, monkeypatch)
        capsys.readouterr()
        before = snapshot(work, output)
        code = main(argv)
        captured = capsys.readouterr()
        after = snapshot(work, output)
    finally:
        unmount_below(work)
    for rel in case.allowed:
        before.pop(rel, None)
        after.pop(rel, None)
    assert "Traceback" not in captured.err + captured.out
    lines = error_lines(captured.err)
    assert code == case.code, (code, captured.err)
    if case.code == 0:
        assert lines == [], captured.err
        line = ""
    else:
        assert len(lines) == 1, captured.err
        line = lines[0].strip()
        assert line.startswith(f"lesionseg {argv[0]}: error:"), line
        assert "internal error" not in line, line
        for word in case.words:
            assert word in line, (word, line)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == [], f"changed outside the output folder: {changed}"
    return line
