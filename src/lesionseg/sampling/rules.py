"""Voxel rules that choose where training examples are centred, read as data (never run).

A rule is terms joined by ``and``; a term is ``lesion``, ``brain``, or ``NAME OP NUMBER``
with ``OP`` one of ``> >= < <=``, each optionally preceded by ``not``. ``NAME`` is an
image channel (``FLAIR``, z-scored as preprocessed) or a stored output of an earlier
predict stage (its foreground probability)::

    FLAIR > 1.5 and brain and not lesion          # the MSSEG candidates' negatives
    first-maps > 0.5 and not lesion               # the cascade's hard negatives

A subject offers its channels by name (``channel_names``) and the stored outputs of
earlier stages (``outputs``: name → ``(K, *spatial)`` array or ``.npy`` file, memory-mapped);
:func:`voxels` evaluates a rule on one subject.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_COMPARE: dict[str, Callable] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_TERM = re.compile(
    r"^(?P<neg>not\s+)?(?:(?P<flag>lesion|brain)|(?P<name>[^\s<>=]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))$"
)


@dataclass(frozen=True)
class Term:
    """One term of a rule.

    Attributes:
        negate: ``not`` before the term.
        flag: ``"lesion"`` or ``"brain"``, or None for a comparison.
        name: Channel or stored output compared.
        op: Comparison operator.
        value: Number compared with.
    """

    negate: bool
    flag: str | None = None
    name: str | None = None
    op: str | None = None
    value: float | None = None


def parse_rule(text: str) -> list[Term]:
    """Read a rule.

    Raises:
        ValueError: A term that is none of the forms above (naming it).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a rule must be text such as 'FLAIR > 1.5 and not lesion', got {text!r}")
    terms = []
    for part in re.split(r"\s+and\s+", text.strip()):
        match = _TERM.match(part.strip())
        if not match:
            raise ValueError(
                f"cannot read {part!r} in rule {text!r}: expected 'lesion', 'brain' or "
                "'NAME > NUMBER' (>, >=, <, <=), optionally after 'not'"
            )
        value = match["value"]
        terms.append(
            Term(
                negate=bool(match["neg"]),
                flag=match["flag"],
                name=match["name"],
                op=match["op"],
                value=None if value is None else float(value),
            )
        )
    return terms


def _term_voxels(term: Term, subject) -> np.ndarray:
    if term.flag == "lesion":
        if subject.label is None:
            raise ValueError("'lesion' needs a label map (rules at prediction cannot use it)")
        return np.asarray(subject.label) > 0
    if term.flag == "brain":
        return np.asarray(subject.mask) > 0
    return _COMPARE[term.op](value_map(subject, term.name), term.value)


def value_map(subject, name: str) -> np.ndarray:
    """A channel of ``subject`` by name, or the foreground probability of a stored output.

    Raises:
        ValueError: Neither a channel nor a stored output of that name.
    """
    channels = list(getattr(subject, "channel_names", None) or [])
    if name in channels:
        return np.asarray(subject.image[channels.index(name)])
    outputs = getattr(subject, "outputs", None) or {}
    if name in outputs:
        stored = outputs[name]
        maps = np.load(stored, mmap_mode="r") if not isinstance(stored, np.ndarray) else stored
        return 1.0 - np.asarray(maps[0])  # foreground: every class but background
    raise ValueError(
        f"no channel or stored output {name!r} (channels: {', '.join(channels) or 'none'}; "
        f"stored outputs: {', '.join(outputs) or 'none'})"
    )


def voxels(rule: list[Term], subject) -> np.ndarray:
    """Boolean map of the voxels of ``subject`` that satisfy every term of ``rule``."""
    selected = np.ones(np.asarray(subject.mask).shape, bool)
    for term in rule:
        hit = _term_voxels(term, subject)
        selected &= ~hit if term.negate else hit
    return selected
