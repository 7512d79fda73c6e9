"""Post-processing asked for on the command line (``lesionseg predict``), merged into a recipe's.

``--postprocess none`` drops the recipe's steps; ``--postprocess crf``, ``--threshold``
and ``--min-lesion-size`` each stand for one step, which replaces the recipe's step of
the same name (merged: the recipe's other options of that step, such as its CRF
parameters or connectivity, stay) or, when the recipe has none, goes to its place in
:data:`STEP_ORDER`: before the first step that comes later in that order (steps not
listed count as last). So the command line alone gives crf → threshold →
min-lesion-size: the CRF refines the probabilities, the threshold turns them into
labels, and the size filter cleans those labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lesionseg.postprocess.chain import Step

#: The order steps from the command line are placed in (probability steps, then label steps).
STEP_ORDER = ("crf", "threshold", "min-lesion-size", "keep-largest")


def _rank(name: str) -> int:
    return STEP_ORDER.index(name) if name in STEP_ORDER else len(STEP_ORDER)


@dataclass(frozen=True)
class PostprocessOverrides:
    """Post-processing options of ``lesionseg predict``.

    Attributes:
        crf: Add the CRF (``--postprocess crf``).
        clear: Drop the recipe's steps (``--postprocess none``).
        threshold: A ``threshold`` step with this probability (``--threshold``).
        min_lesion_size: A ``min-lesion-size`` step with this size (``--min-lesion-size``).
        min_lesion_unit: Its unit, ``"mm3"`` or ``"voxels"`` (``--min-lesion-unit``).
    """

    crf: bool = False
    clear: bool = False
    threshold: float | None = None
    min_lesion_size: float | None = None
    min_lesion_unit: str = "mm3"

    def steps(self) -> list[Step]:
        """The steps these options stand for, in :data:`STEP_ORDER`."""
        steps: list[Step] = []
        if self.crf:
            steps.append(("crf", {}))
        if self.threshold is not None:
            steps.append(("threshold", {"threshold": self.threshold}))
        if self.min_lesion_size is not None:
            options = {"size": self.min_lesion_size, "unit": self.min_lesion_unit}
            steps.append(("min-lesion-size", options))
        return steps

    def apply(self, steps: Sequence[Step]) -> list[Step]:
        """The recipe's ``steps`` with these options applied (see the module docstring)."""
        result = [] if self.clear else [(name, dict(options)) for name, options in steps]
        for name, options in self.steps():
            same = [i for i, (other, _) in enumerate(result) if other == name]
            if same:
                first = same[0]
                result[first] = (name, {**result[first][1], **options})
                result = [s for i, s in enumerate(result) if i == first or i not in same]
            else:
                at = next(
                    (i for i, (other, _) in enumerate(result) if _rank(other) > _rank(name)),
                    len(result),
                )
                result.insert(at, (name, options))
        return result
