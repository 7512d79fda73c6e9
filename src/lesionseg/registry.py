"""Name → factory registries, so that recipes can name parts and users can add their own.

Example:
    >>> from lesionseg.models import MODELS
    >>> @MODELS.register("my-net")
    ... def build_my_net(in_channels: int, num_classes: int, width: int = 8): ...
    >>> model = MODELS.build("my-net", in_channels=4, num_classes=2, width=16)
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from lesionseg.errors import LesionsegError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories (classes or functions) of one kind of part.

    Args:
        kind: What the registry holds ("model", "loss", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a factory under ``name``."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    @contextlib.contextmanager
    def registered(self, name: str, factory: Callable[..., T]) -> Iterator[Callable[..., T]]:
        """Register ``factory`` as ``name`` for the duration of a ``with`` block (tests).

        Example:
            >>> with MODELS.registered("test-net", TinyNet):
            ...     model = MODELS.build("test-net", in_channels=1, num_classes=2)
        """
        self.register(name)(factory)
        try:
            yield factory
        finally:
            self._factories.pop(name, None)

    @contextlib.contextmanager
    def scope(self) -> Iterator[Registry[T]]:
        """Undo every registration made inside the ``with`` block when it ends (tests, docs)."""
        saved = dict(self._factories)
        try:
            yield self
        finally:
            self._factories = saved

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``.

        Raises:
            LesionsegError: Unknown name (with the closest known names as a hint).
        """
        if name not in self._factories:
            close = difflib.get_close_matches(name, self._factories, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            known = ", ".join(sorted(self._factories))
            raise LesionsegError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        return self._factories[name]

    def build(self, name: str, **kwargs: Any) -> T:
        """Call the factory ``name`` with ``kwargs``, with a clear error for a bad option."""
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            if "argument" in str(err):
                raise LesionsegError(f"{self.kind} {name!r}: {err}") from None
            raise

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
