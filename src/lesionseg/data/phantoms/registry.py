"""The phantom tasks by name."""

from __future__ import annotations

from lesionseg.data.phantoms.base import PhantomTask
from lesionseg.errors import LesionsegError


def task_names() -> list[str]:
    """Names of the phantom tasks."""
    return list(_factories())


def _factories() -> dict:
    from lesionseg.data.phantoms.ms import MSTask
    from lesionseg.data.phantoms.stroke_acute import StrokeAcuteTask
    from lesionseg.data.phantoms.stroke_chronic import StrokeChronicTask
    from lesionseg.data.phantoms.tumor import TumorTask

    return {
        "ms": MSTask,
        "tumor": TumorTask,
        "stroke-acute": StrokeAcuteTask,
        "stroke-chronic": StrokeChronicTask,
    }


def get_task(name: str) -> PhantomTask:
    """A fresh task object with default settings.

    Raises:
        LesionsegError: For an unknown name.
    """
    factories = _factories()
    if name not in factories:
        raise LesionsegError(f"unknown phantom task {name!r} (choose from {', '.join(factories)})")
    return factories[name]()
