"""The lesion table against independent counts, and its file round trip."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lesionseg.report.build import PredictionFiles, ReportSettings, report_case
from lesionseg.report.lesions import label_lesions, lesion_table

STRUCTURES = {6: 1, 18: 2, 26: 3}  # connectivity → scipy's generate_binary_structure rank


def touching_and_diagonal() -> np.ndarray:
    """Lesions that touch by a face, by an edge only and by a corner only, and a lone one."""
    labels = np.zeros((20, 18, 16), np.uint8)
    labels[2:5, 2:5, 2:5] = 1
    labels[5:7, 2:4, 2:4] = 1  # face-adjacent to the first: one lesion for every connectivity
    labels[8:10, 8:10, 8:10] = 1
    labels[10, 10, 8] = 1  # edge-adjacent: joined under 18 and 26
    labels[11, 11, 9] = 1  # corner-adjacent to the last: joined under 26 only
    labels[14:17, 3:6, 10:14] = 2  # a second label value
    labels[16, 14, 2] = 1  # a single voxel
    return labels


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_counts_and_volumes_equal_an_independent_labelling(connectivity):
    labels = touching_and_diagonal()
    affine = np.array([[0.9, 0, 0, -10], [0, 1.1, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    table, numbered = lesion_table("c", labels, affine, connectivity=connectivity)
    structure = ndimage.generate_binary_structure(3, STRUCTURES[connectivity])
    reference, count = ndimage.label(labels > 0, structure)
    sizes = np.bincount(reference.ravel())[1:]
    assert len(table.lesions) == count
    assert [les.voxels for les in table.lesions] == sorted(sizes.tolist(), reverse=True)
    voxel = 0.9 * 1.1 * 2.5
    for les in table.lesions:
        assert les.volume_mm3 == pytest.approx(les.voxels * voxel)
        # the centroid in world mm: the affine applied to scipy's centre of mass
        centre = ndimage.center_of_mass(numbered == les.id)
        assert les.centroid_mm == pytest.approx(tuple((affine @ [*centre, 1])[:3]))
        box = np.argwhere(numbered == les.id)
        assert les.bbox_min_voxel == tuple(box.min(0)) and les.bbox_max_voxel == tuple(box.max(0))
    assert table.totals()["count"] == count
    assert table.totals()["volume_ml"] == pytest.approx(labels.astype(bool).sum() * voxel / 1000)
    assert f"{connectivity}-connected" in table.rules()


def test_counts_differ_by_connectivity_as_drawn():
    labels = touching_and_diagonal()
    counts = {c: label_lesions(labels, connectivity=c)[1] for c in (6, 18, 26)}
    assert counts == {6: 6, 18: 5, 26: 4}


def test_min_size_labels_and_majority_label():
    labels = touching_and_diagonal()
    table, _ = lesion_table("c", labels, np.eye(4), min_size_voxels=2)
    assert all(les.voxels >= 2 for les in table.lesions)
    assert len(table.lesions) == 3  # the single voxel is left out under 26-connectivity
    only_two, _ = lesion_table("c", labels, np.eye(4), lesion_labels=[2])
    assert [les.voxels for les in only_two.lesions] == [36]
    assert only_two.lesions[0].label == 2
    assert "label(s) 2" in only_two.rules() and "at least 1 voxel" in only_two.rules()


def test_probability_and_uncertainty_per_lesion():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    probs = np.zeros(labels.shape, np.float32)
    probs[1:3, 1:3, 1:3] = 0.6
    probs[1, 1, 1] = 0.9
    entropy = np.full(labels.shape, 0.25, np.float32)
    table, _ = lesion_table(
        "c", labels, np.eye(4), probabilities=probs, uncertainty={"entropy": entropy}
    )
    (lesion,) = table.lesions
    assert lesion.max_probability == pytest.approx(0.9)
    assert lesion.mean_probability == pytest.approx((7 * 0.6 + 0.9) / 8)
    assert lesion.mean_uncertainty == pytest.approx(0.25)


def test_centroids_stay_in_the_files_world_coordinates(tmp_path):
    """A file stored in LPS order: the table's world centroids are the file's own."""
    labels = touching_and_diagonal()
    affine = np.array([[-1.0, 0, 0, 40], [0, -1.2, 0, 30], [0, 0, 2.0, -20], [0, 0, 0, 1]])
    seg = tmp_path / "c_seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), seg)
    report = report_case(PredictionFiles("c", seg), None, ReportSettings(registration="none"))
    stored, _ = ndimage.label(labels > 0, np.ones((3, 3, 3)))
    expected = sorted(
        tuple(np.round((affine @ [*ndimage.center_of_mass(stored == k), 1])[:3], 3))
        for k in range(1, stored.max() + 1)
    )
    got = sorted(tuple(np.round(les.centroid_mm, 3)) for les in report.table.lesions)
    assert got == expected


def test_csv_and_json_agree(tmp_path):
    labels = touching_and_diagonal()
    table, _ = lesion_table("c", labels, np.diag([2.0, 2.0, 2.0, 1.0]))
    lines = table.to_csv().splitlines()
    assert lines[0].startswith("# c: lesions: 26-connected")
    rows = list(csv.DictReader(lines[1:]))
    data = json.loads(json.dumps(table.to_json()))
    assert [int(r["voxels"]) for r in rows] == [les["voxels"] for les in data["lesions"]]
    assert data["connectivity"] == 26 and data["min_size_voxels"] == 1
    assert data["totals"]["count"] == len(rows)
