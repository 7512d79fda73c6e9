"""A real headless Chromium for page tests: find it, dump a page's DOM, take a screenshot.

Debian's ``chromium`` package (``apt-get install -y chromium``). Without a browser the
tests that need one are skipped locally and fail in CI (``CI`` set), where they must run.
Every run gets a fresh profile (``--user-data-dir``) and a timeout, and the console
messages of the page (Chromium's ``--enable-logging=stderr`` lines tagged ``CONSOLE``)
are returned so a test can require that none is an error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

BINARIES = ("chromium", "chromium-browser", "chromium-headless-shell")
TIMEOUT_S = 60
# Same for every run: no GPU or sandbox in containers; /dev/shm is tiny in Docker;
# no first-run work; the compositor finishes before a screenshot is taken.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--run-all-compositor-stages-before-draw",
    "--enable-logging=stderr",
    "--v=0",
)
# A page's console message: '...:INFO:CONSOLE:12] "text", source: file:///... (12)'
# (older builds write 'CONSOLE(12)').
_CONSOLE = re.compile(r":CONSOLE[:(]")
_CONSOLE_ERROR = re.compile(r"Uncaught|\bError\b|\berror\b")


@dataclass
class BrowserRun:
    """What one Chromium run gave.

    Attributes:
        returncode: Exit status.
        stdout: Standard output (the DOM for ``--dump-dom``).
        console: The page's console messages (from the log on stderr).
        stderr: The whole log.
    """

    returncode: int
    stdout: str
    console: list[str]
    stderr: str

    def console_errors(self) -> list[str]:
        """Console messages that report an error (uncaught exceptions, console.error)."""
        return [line for line in self.console if _CONSOLE_ERROR.search(line)]


def find_chromium() -> str | None:
    """Path of the first Chromium binary on PATH, or None."""
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """The Chromium binary; skips the test without one, or fails it when ``CI`` is set."""
    path = find_chromium()
    if path is None:
        message = f"no Chromium ({', '.join(BINARIES)}); install it: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {message}")
        pytest.skip(message)
    return path


def _run(binary: str, args: list[str], profile: Path, timeout: float) -> BrowserRun:
    profile.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        # The log can hold bytes that are not UTF-8 (paths, D-Bus noise).
        errors="replace",
    )
    console = [line for line in result.stderr.splitlines() if _CONSOLE.search(line)]
    return BrowserRun(result.returncode, result.stdout, console, result.stderr)


def dump_dom(binary: str, page: Path, profile: Path, timeout: float = TIMEOUT_S) -> BrowserRun:
    """Open ``page`` as ``file://`` and return its DOM after the load event (stdout)."""
    return _run(binary, ["--dump-dom", Path(page).resolve().as_uri()], profile, timeout)


def screenshot(
    binary: str,
    page: Path,
    out: Path,
    profile: Path,
    size: tuple[int, int] = (1200, 1600),
    timeout: float = TIMEOUT_S,
) -> BrowserRun:
    """Open ``page`` as ``file://`` and write a PNG of its first ``size`` pixels to ``out``."""
    args = [
        f"--screenshot={Path(out).resolve()}",
        f"--window-size={size[0]},{size[1]}",
        Path(page).resolve().as_uri(),
    ]
    return _run(binary, args, profile, timeout)
