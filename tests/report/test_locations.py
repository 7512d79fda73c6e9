"""Location classes: the rule on hand-made regions, and registration on ``ms`` phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.report.lesions import label_lesions
from lesionseg.report.locations import RegionMasks, classify_lesions


def regions(shape=(30, 30, 30)) -> RegionMasks:
    ventricles = np.zeros(shape, bool)
    ventricles[10:14, 10:14, 10:14] = True
    cortex = np.zeros(shape, bool)
    cortex[:, :, 27:] = True
    infratentorial = np.zeros(shape, bool)
    infratentorial[:, :, :5] = True
    return RegionMasks(ventricles, cortex, infratentorial)


def test_rule_order_and_the_one_voxel_dilation():
    shape = (30, 30, 30)
    labels = np.zeros(shape, np.uint8)
    labels[14:16, 11:13, 11:13] = 1  # touches the ventricles' face: periventricular
    labels[20:22, 20:22, 25:27] = 1  # one voxel below the cortex: juxtacortical
    labels[3:5, 3:5, 15:27] = 1  # a long one whose top voxel row borders the cortex
    labels[20:23, 5:8, 1:4] = 1  # inside the infratentorial region
    labels[20:22, 12:14, 14:16] = 1  # deep white matter: subcortical
    labels[25:27, 25:27, 4:7] = 1  # 2 of 12 voxels infratentorial: not the majority
    # a lesion touching both ventricles and cortex is periventricular (the rule's order)
    labels[12, 12:14, 14:27] = 1
    numbered, count = label_lesions(labels, connectivity=26)
    classes = classify_lesions(numbered, regions(shape))
    by_voxel = {tuple(map(int, np.argwhere(numbered == k)[0])): v for k, v in classes.items()}
    assert count == 7
    assert by_voxel[(14, 11, 11)] == "periventricular"
    assert by_voxel[(20, 20, 25)] == "juxtacortical"
    assert by_voxel[(3, 3, 15)] == "juxtacortical"
    assert by_voxel[(20, 5, 1)] == "infratentorial"
    assert by_voxel[(20, 12, 14)] == "subcortical"
    assert by_voxel[(25, 25, 4)] == "subcortical"
    assert by_voxel[(12, 12, 14)] == "periventricular"


def test_two_voxels_away_is_not_touching():
    shape = (30, 30, 30)
    labels = np.zeros(shape, np.uint8)
    labels[15:17, 11:13, 11:13] = 1  # a one-voxel gap to the ventricles (which end at 13)
    numbered, _ = label_lesions(labels)
    assert classify_lesions(numbered, regions(shape)) == {1: "subcortical"}


@pytest.fixture(scope="module")
def ms_phantoms():
    """Three held-out ``ms`` phantoms at 2 mm (indices past any training set of the tests)."""
    from lesionseg.data.phantoms import generate_subject, get_task

    task = get_task("ms")
    return [generate_subject(task, index, 0, 2.0, None, -1.0) for index in (16, 17, 18)]


def test_report_locations_agree_with_the_phantoms_truth(ms_phantoms, tmp_path):
    """Registration-based classes against the truth the generator records (>= 90 %)."""
    import nibabel as nib

    from lesionseg.data.dataset import Subject
    from lesionseg.report.build import PredictionFiles, ReportSettings, report_case

    agree = total = 0
    for phantom in ms_phantoms:
        paths = {}
        for name, array in (("seg", phantom.label), ("T1", phantom.images["T1"])):
            paths[name] = tmp_path / f"{phantom.id}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(array, phantom.affine), paths[name])
        mask = tmp_path / f"{phantom.id}_mask.nii.gz"
        nib.save(nib.Nifti1Image(phantom.mask, phantom.affine), mask)
        subject = Subject(phantom.id, {"T1": paths["T1"]}, mask=mask, split="test")
        report = report_case(PredictionFiles(phantom.id, paths["seg"]), subject, ReportSettings())
        truth = phantom.info["lesion_locations"]
        assert truth["connectivity"] == report.table.connectivity
        centroids = np.array([les.centroid_mm for les in report.table.lesions])
        for lesion in truth["lesions"]:
            # the same lesion at the same world position: the subject's grid is untouched
            distance = np.linalg.norm(centroids - np.asarray(lesion["centroid_mm"]), axis=1)
            assert distance.min() < 0.01
            got = report.table.lesions[int(distance.argmin())]
            assert got.voxels == lesion["voxels"]
            agree += got.location == lesion["location"]
            total += 1
        assert report.table.locations["registration"]["brain_dice"] > 0.95
    assert total >= 40
    assert agree / total >= 0.9, f"{agree}/{total} lesions in the true location class"


def test_truth_covers_every_labelled_lesion(ms_phantoms):
    for phantom in ms_phantoms:
        _, count = label_lesions(phantom.label, connectivity=26)
        lesions = phantom.info["lesion_locations"]["lesions"]
        assert len(lesions) == count
        assert {les["location"] for les in lesions} <= {
            "periventricular",
            "juxtacortical",
            "infratentorial",
            "subcortical",
        }
