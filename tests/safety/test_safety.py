"""Every case of the safety issue's points 1-9: one clear line, exit 2, nothing else touched.

The cases live in ``cases_*.py`` beside this file, one table per area; this module runs them
all with one harness (:mod:`tests.safety.harness`).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

from tests.safety.harness import Case, run_case


def _all_cases() -> list[Case]:
    cases: list[Case] = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("cases_"):
            module = importlib.import_module(f"tests.safety.{info.name}")
            cases += module.CASES
    return cases


CASES = _all_cases()


def test_every_point_is_covered():
    # point 6 (memory per tile) has its own tests in tests/inference/test_tile_padding.py
    assert {c.point for c in CASES} >= set(range(1, 10)) - {6}


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, tmp_path, monkeypatch, capsys):
    run_case(case, tmp_path / "work", monkeypatch, capsys)
