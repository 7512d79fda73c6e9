"""Lesion-wise presets: hand-computed counts and brute-force transcriptions of the tools."""

import math

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
from eval_masks import lesion_masks
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from lesionseg.errors import LesionsegError
from lesionseg.evaluation.lesionwise import PRESETS, get_preset, lesion_metrics

SHAPE = (40, 40, 40)


def hand_example():
    """Two lesions found (one split in two pieces), one missed, one false positive."""
    ref = np.zeros(SHAPE, bool)
    pred = np.zeros(SHAPE, bool)
    ref[2:5, 2:5, 2:5] = pred[2:5, 2:5, 2:5] = True  # A: 27 voxels, found exactly
    ref[20:23, 2:5, 2:5] = True  # B: 27 voxels, missed
    ref[2:5, 20:23, 2:9] = True  # C: 63 voxels ...
    pred[2:5, 20:23, 2:4] = True  # ... found as two pieces of 18
    pred[2:5, 20:23, 6:9] = True  # ... and 27 voxels
    pred[30:32, 30:32, 30:32] = True  # false positive of 8 voxels
    return pred, ref


# preset → (reference lesions, predicted lesions, TP, FP, FN, F1)
EXPECTED = {
    "isles22": (3, 4, 2, 1, 1, 2 / 3),
    "atlas": (3, 4, 2, 1, 1, 2 / 3),
    "edd": (3, 4, 2, 1, 1, 2 / 3),
    # the split counts once; its second piece becomes a false positive
    "medpy": (3, 4, 2, 2, 1, 2 / (2 + 3 / 2)),
    # lesion sensitivity 2/3, PPV 3/4 (both pieces of C are detected predictions)
    "msseg": (3, 4, 2, 1, 1, 2 * (3 / 4) * (2 / 3) / (3 / 4 + 2 / 3)),
    # A and B (27 mm³) are below the 50 mm³ threshold: only C is scored
    "brats2023-glioma": (1, 4, 1, 1, 0, 2 / 3),
    "brats2023-metastases": (3, 4, 2, 1, 1, 2 / 3),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_example_counts(name):
    pred, ref = hand_example()
    r = lesion_metrics(pred, ref, (1.0, 1.0, 1.0), name)
    assert (r.n_ref, r.n_pred, r.tp, r.fp, r.fn) == EXPECTED[name][:5]
    assert r.f1 == pytest.approx(EXPECTED[name][5])


def test_hand_example_extras():
    pred, ref = hand_example()
    edd = lesion_metrics(pred, ref, 1.0, "edd").values()
    assert (edd["fp_mean_vox"], edd["fn_mean_vox"], edd["detected"]) == (8.0, 27.0, 1.0)
    assert edd["ref_mean_lesion_vox"] == pytest.approx((27 + 27 + 63) / 3)
    msseg = lesion_metrics(pred, ref, 1.0, "msseg").extra
    assert msseg == pytest.approx({"lesion_sensitivity": 2 / 3, "lesion_ppv": 3 / 4})
    medpy = lesion_metrics(pred, ref, 1.0, "medpy").extra
    assert medpy["obj_tpr"] == pytest.approx(medpy_binary.obj_tpr(pred, ref))
    assert medpy["obj_fpr"] == pytest.approx(medpy_binary.obj_fpr(pred, ref))
    # C's pieces are 1 voxel (along z) from C's surface at most: area-weighted HD95 = 1 mm
    met = lesion_metrics(pred, ref, 1.0, "brats2023-metastases").extra
    assert met["lesion_dice"] == pytest.approx((1.0 + 0.0 + 90 / 108 + 0.0) / 4)
    assert met["lesion_hd95_mm"] == pytest.approx((0.0 + 374 + 1.0 + 374) / 4)
    gli = lesion_metrics(pred, ref, 1.0, "brats2023-glioma").extra
    assert gli["lesion_dice"] == pytest.approx((90 / 108) / 2)
    assert gli["lesion_hd95_mm"] == pytest.approx((1.0 + 374) / 2)


def test_brats_dilation_merges_close_reference_lesions():
    ref = np.zeros((20, 12, 12), bool)
    ref[2:5, 3:8, 3:8] = True
    ref[7:10, 3:8, 3:8] = True  # 2 voxels apart: one lesion after 1 dilation
    ref[13:16, 3:8, 3:8] = True  # 3 voxels further: separate
    pred = ref.copy()
    r = lesion_metrics(pred, ref, 1.0, "brats2023-meningioma")  # dilation 1, 50 mm³
    assert r.n_ref == 2 and r.tp == 2 and r.extra["lesion_dice"] == 1.0
    r3 = lesion_metrics(pred, ref, 1.0, "brats2023-glioma")  # dilation 3 merges all three
    assert r3.n_ref == 1


def test_connectivity_changes_counts_and_is_reported():
    ref = np.zeros((8, 8, 8), bool)
    ref[2, 2, 2] = ref[3, 3, 3] = True  # corner neighbours: one lesion only with 26
    assert lesion_metrics(ref, ref, 1.0, "isles22").n_ref == 1
    assert lesion_metrics(ref, ref, 1.0, "atlas").n_ref == 2
    six = lesion_metrics(ref, ref, 1.0, "isles22", connectivity=6)
    assert six.n_ref == 2 and six.preset.describe()["connectivity"] == 6
    with pytest.raises(LesionsegError, match="connectivity"):
        get_preset("isles22", connectivity=8)
    with pytest.raises(LesionsegError, match="did you mean"):
        get_preset("isles2022")


def test_every_preset_describes_itself():
    for name in PRESETS.names():
        info = get_preset(name).describe(voxel_volume_mm3=1.0)
        for key in (
            "connectivity",
            "dilation",
            "min_size_mm3",
            "min_size_voxels",
            "overlap_rule",
            "empty_rule",
            "source",
        ):
            assert info[key] is not None and info[key] != ""
    assert get_preset("msseg").describe(1.0)["min_size_voxels"] == 4  # floor(3 / 1) + 1
    assert get_preset("msseg").describe(0.5)["min_size_voxels"] == 7


@pytest.mark.parametrize("name", PRESETS.names())
def test_empty_cases(name):
    empty = np.zeros((10, 10, 10), bool)
    some = empty.copy()
    some[3:7, 3:7, 3:7] = True
    both = lesion_metrics(empty, empty, 1.0, name)
    assert both.f1 == 1.0 and both.tp == both.fp == both.fn == 0
    missed = lesion_metrics(empty, some, 1.0, name)
    assert missed.f1 == 0.0 and missed.fn == 1
    spurious = lesion_metrics(some, empty, 1.0, name)
    assert spurious.f1 == 0.0 and spurious.fp == 1
    if name.startswith("brats"):
        assert both.extra == {"lesion_dice": 1.0, "lesion_hd95_mm": 0.0}
        assert missed.extra == {"lesion_dice": 0.0, "lesion_hd95_mm": 374.0}
        assert spurious.extra == {"lesion_dice": 0.0, "lesion_hd95_mm": 374.0}
    if name == "msseg":
        assert math.isnan(both.extra["lesion_sensitivity"]) and math.isnan(both.extra["lesion_ppv"])


# ------------------------------------------------------------ brute-force transcriptions


def isles_reference(pred, ref, connectivity):
    """ISLES'22 compute_lesion_f1_score, cluster by cluster on the full volume."""
    tp = fp = fn = 0
    fp_sizes, fn_sizes = [], []
    gt_labels = cc3d.connected_components(ref.astype(np.uint8), connectivity=connectivity)
    for lab in range(1, gt_labels.max() + 1):
        cluster = gt_labels == lab
        if (cluster & pred).any():
            tp += 1
        else:
            fn += 1
            fn_sizes.append(int(cluster.sum()))
    pred_labels = cc3d.connected_components(pred.astype(np.uint8), connectivity=connectivity)
    for lab in range(1, pred_labels.max() + 1):
        cluster = pred_labels == lab
        if not (cluster & ref).any():
            fp += 1
            fp_sizes.append(int(cluster.sum()))
    f1 = 1.0 if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2)
    return tp, fp, fn, f1, sorted(fp_sizes), sorted(fn_sizes)


def anima_reference(pred, ref, spacing, alpha=0.1, beta=0.7, gamma=0.65, min_mm3=3.0):
    """Anima's getOverlapTab / getTruePositiveLesions on a dense table, labels from ITK."""
    min_vox = int(math.floor(min_mm3 / float(np.prod(spacing)))) + 1

    def label(mask):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        components = sitk.ConnectedComponent(image, False)  # ITK default: face connectivity
        relabelled = sitk.RelabelComponent(components, minimumObjectSize=min_vox)
        array = sitk.GetArrayFromImage(relabelled)
        return array, int(array.max()) + 1

    ref_l, n_ref = label(ref)
    test_l, n_test = label(pred)
    table = np.zeros((n_ref, n_test), np.int64)
    np.add.at(table, (ref_l.ravel(), test_l.ravel()), 1)

    def true_positives(n_a, n_b, tab):
        row_tp = tab[:, 1:].sum(axis=1)
        column = tab.sum(axis=0)
        found = 0
        for i in range(1, n_a):
            if not row_tp[i] / (row_tp[i] + tab[i, 0]) > alpha:
                continue
            order = sorted(range(1, n_b), key=lambda lab: -tab[i, lab])
            weight, k, bail = 0.0, 0, False
            while weight < gamma and k < n_a and k < len(order) and not bail:
                lab = order[k]
                bail = tab[0, lab] / column[lab] > beta
                if not bail:
                    weight += tab[i, lab] / row_tp[i]
                k += 1
            found += not bail
        return found

    if n_ref > 1 and n_test > 1:
        return true_positives(n_ref, n_test, table), true_positives(n_test, n_ref, table.T)
    return 0, 0


def brats_reference(pred, ref, spacing, dil, thresh, sd):
    """BraTS 2023 get_lesion_wise_score and its summary, on the full volume."""
    struct = ndimage.generate_binary_structure(3, 2)
    gt_cc = cc3d.connected_components(ref.astype(np.uint8), connectivity=26)
    pred_cc = cc3d.connected_components(pred.astype(np.uint8), connectivity=26)
    dilated = ndimage.binary_dilation(ref, structure=struct, iterations=dil) if dil else ref
    dil_cc = cc3d.connected_components(dilated.astype(np.uint8), connectivity=26)
    merged = np.zeros_like(dil_cc)
    for comp in range(1, dil_cc.max() + 1):
        part = (gt_cc * (dil_cc == comp)) > 0
        merged[part] = comp
    tp_list, scored, fp_total = [], [], 0
    n_tp = n_fn = 0
    vox = float(np.prod(spacing))
    for comp in range(1, merged.max() + 1):
        lesion = merged == comp
        reach = ndimage.binary_dilation(lesion, structure=struct, iterations=dil) if dil else lesion
        hits = np.unique(pred_cc[reach])
        hits = hits[hits != 0]
        tp_list += list(hits)
        matched = np.isin(pred_cc, hits)
        dice = 2 * (matched & lesion).sum() / (matched.sum() + lesion.sum())
        hd = sd.compute_robust_hausdorff(sd.compute_surface_distances(lesion, matched, spacing), 95)
        hd = 374.0 if np.isinf(hd) else hd
        if lesion.sum() * vox > thresh:
            scored.append((dice, hd))
            n_tp += len(hits) > 0
            n_fn += len(hits) == 0
    fp_total = len(np.setdiff1d(np.unique(pred_cc[pred_cc > 0]), tp_list))
    den = len(scored) + fp_total
    if den == 0:
        return n_tp, fp_total, n_fn, 1.0, 0.0
    dice = sum(s[0] for s in scored) / den
    hd95 = (sum(s[1] for s in scored) + 374 * fp_total) / den
    return n_tp, fp_total, n_fn, dice, hd95


@pytest.mark.parametrize("seed", range(4))
def test_overlap_presets_match_isles_transcription(seed):
    pred, ref = lesion_masks((30, 28, 26), 10, seed)
    for name, conn in (("isles22", 26), ("atlas", 6), ("edd", 26)):
        r = lesion_metrics(pred, ref, 1.0, name)
        tp, fp, fn, f1, fp_sizes, fn_sizes = isles_reference(pred, ref, conn)
        assert (r.tp, r.fp, r.fn) == (tp, fp, fn)
        assert r.f1 == pytest.approx(f1, abs=1e-12)
        assert sorted(r.fp_sizes.tolist()) == fp_sizes and sorted(r.fn_sizes.tolist()) == fn_sizes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 1.5)])
def test_msseg_matches_anima_transcription(seed, spacing):
    pred, ref = lesion_masks((30, 28, 26), 12, seed)
    r = lesion_metrics(pred, ref, spacing, "msseg")
    assert (r.tp, r.tp_pred) == anima_reference(pred, ref, spacing)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("connectivity", [6, 26])
def test_medpy_preset_matches_medpy(seed, connectivity):
    pred, ref = lesion_masks((26, 26, 24), 9, seed)
    r = lesion_metrics(pred, ref, 1.0, "medpy", connectivity=connectivity)
    rank = {6: 1, 26: 3}[connectivity]
    assert r.extra["obj_tpr"] == pytest.approx(medpy_binary.obj_tpr(pred, ref, rank))
    assert r.extra["obj_fpr"] == pytest.approx(medpy_binary.obj_fpr(pred, ref, rank))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", ["brats2023-glioma", "brats2023-metastases"])
def test_brats_matches_full_volume_transcription(seed, name, deepmind_numpy2):
    pred, ref = lesion_masks((32, 30, 28), 8, seed)
    spacing = (1.0, 1.0, 1.0) if seed < 2 else (0.9, 1.1, 1.3)
    preset = get_preset(name)
    r = lesion_metrics(pred, ref, spacing, name)
    tp, fp, fn, dice, hd95 = brats_reference(
        pred, ref, spacing, preset.dilation, preset.min_size_mm3, deepmind_numpy2
    )
    assert (r.tp, r.fp, r.fn) == (tp, fp, fn)
    assert r.extra["lesion_dice"] == pytest.approx(dice, abs=1e-9)
    assert r.extra["lesion_hd95_mm"] == pytest.approx(hd95, abs=1e-3)
