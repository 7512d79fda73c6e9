"""Summaries, paired tests, size groups, BRATS regions and the box plot."""

import math

import numpy as np
import pytest
from scipy import stats

from lesionseg.errors import LesionsegError
from lesionseg.evaluation.groups import lesion_size_groups, mean_lesion_size
from lesionseg.evaluation.plots import metric_boxplot
from lesionseg.evaluation.regions import region_definitions, region_mask
from lesionseg.evaluation.statistics import (
    global_dice_rows,
    paired_test,
    summarize,
    summary_rows,
)


def test_summary_is_nan_aware_and_says_so():
    s = summarize([1.0, float("nan"), 3.0])
    assert (s.mean, s.n, s.n_total) == (2.0, 2, 3)
    assert s.sd == pytest.approx(math.sqrt(2.0))  # sample SD, ddof = 1
    assert s.format(3) == "2.000 (1.414) [n=2/3]"
    assert summarize([0.5, 0.7]).format(2) == "0.60 (0.14)"
    assert summarize([float("nan")]).format() == "n/a [n=0/1]"


def test_summary_rows_group_by_method_and_region():
    rows = [
        {"method": "A", "case": "1", "region": "r", "dice": 0.5, "tp_vox": 1},
        {"method": "A", "case": "2", "region": "r", "dice": 0.7, "tp_vox": 1},
        {"method": "B", "case": "1", "region": "r", "dice": 0.9, "tp_vox": 1},
    ]
    out = summary_rows(rows)
    assert [(r["method"], r["metric"], r["n"]) for r in out] == [("A", "dice", 2), ("B", "dice", 1)]
    assert out[0]["mean"] == pytest.approx(0.6)


def test_paired_tests_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 0.9, 12)
    b = a - rng.uniform(0.0, 0.1, 12)
    values_a = {f"c{i}": v for i, v in enumerate(a)}
    values_b = {f"c{i}": v for i, v in enumerate(b)}
    values_b["c0"] = float("nan")  # an undefined value drops the pair
    t = paired_test(values_a, values_b, "dice", "A", "B")
    assert (t.n, t.dropped) == (11, 1)
    expected_t = stats.ttest_rel(a[1:], b[1:])
    expected_w = stats.wilcoxon(a[1:], b[1:])
    assert t.t_pvalue == pytest.approx(expected_t.pvalue)
    assert t.t_statistic == pytest.approx(expected_t.statistic)
    assert t.wilcoxon_pvalue == pytest.approx(expected_w.pvalue)
    assert t.mean_difference == pytest.approx(np.mean(a[1:] - b[1:]))
    same = paired_test({"x": 1.0, "y": 0.5}, {"x": 1.0, "y": 0.5})
    assert math.isnan(same.wilcoxon_pvalue)  # all differences zero: no test, said explicitly


def test_global_dice_rows():
    rows = [
        {"method": "A", "region": "r", "tp_vox": 5, "pred_vox": 6, "ref_vox": 8},
        {"method": "A", "region": "r", "tp_vox": 0, "pred_vox": 0, "ref_vox": 2},
    ]
    assert global_dice_rows(rows)[0]["global_dice"] == pytest.approx(10 / 16)


def test_edd_size_groups():
    groups, threshold = lesion_size_groups({"a": 10.0, "b": 50.0, "c": 30.0, "d": math.nan})
    assert threshold == 30.0
    assert groups == {"a": "small", "b": "large", "c": "large", "d": "none"}
    ref = np.zeros((10, 10, 10), bool)
    ref[1:3, 1:3, 1:3] = True  # 8 voxels
    ref[6:9, 6:9, 6:8] = True  # 18 voxels
    assert mean_lesion_size(ref) == 13.0
    assert math.isnan(mean_lesion_size(np.zeros((3, 3, 3))))


def test_brats_regions():
    labels = np.array([0, 1, 2, 3, 4, 4]).reshape(1, 1, 6)
    definitions = region_definitions(regions="brats")
    assert definitions == {"whole": (1, 2, 3, 4), "core": (1, 3, 4), "enhancing": (4,)}
    counts = {n: int(region_mask(labels, v).sum()) for n, v in definitions.items()}
    assert counts == {"whole": 5, "core": 4, "enhancing": 2}
    named = region_definitions([1, 2], None, {1: "lesion", 2: "oedema"})
    assert list(named) == ["lesion", "oedema"]
    with pytest.raises(LesionsegError, match="unknown scheme"):
        region_definitions(regions="brats2099")


def test_boxplot_png(tmp_path):
    rows = [
        {"method": m, "region": r, "case": str(i), "dice": v}
        for m, base in (("A", 0.6), ("B", 0.8))
        for r in ("whole", "core")
        for i, v in enumerate(base + np.linspace(-0.1, 0.1, 5))
    ]
    rows[0]["dice"] = float("nan")
    path = metric_boxplot(rows, tmp_path / "box.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LesionsegError, match="exists"):
        metric_boxplot(rows, path, overwrite=False)
