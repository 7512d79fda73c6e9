"""The one exception type for mistakes in user input.

The CLI prints a ``LesionsegError`` as a single line and exits with status 2;
any other exception is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations

from pathlib import Path


class LesionsegError(Exception):
    """A problem with user input (a file, an option, a data set), reported as one line.

    Args:
        message: What is wrong, phrased for the user.
        path: The file or folder concerned, if any; it is put first in the message.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        text = " ".join(str(message).split())  # always one line
        super().__init__(f"{self.path}: {text}" if self.path is not None else text)
