"""Phantom generator: physics of what is written, determinism, layout, baseline difficulty."""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np
import pytest

from lesionseg.cli.main import main
from lesionseg.data.dataset import load_msd
from lesionseg.data.nifti import load_nifti
from lesionseg.data.phantoms import generate_subject, get_task, synthesize
from lesionseg.data.phantoms.anatomy import WorkGrid
from lesionseg.data.phantoms.contrast import TISSUE_SIGNAL
from lesionseg.data.phantoms.deform import MassEffect
from lesionseg.data.phantoms.lesions import Compartment, random_blob, render_blobs
from lesionseg.errors import LesionsegError
from lesionseg.report.slices import SliceRow, lesion_centre, save_slices, view_aspect, view_slice

SPACING = 4.0


@functools.cache
def phantom(task: str, index: int = 0, spacing: float = SPACING, snr: float | None = -1.0):
    return generate_subject(get_task(task), index, seed=0, spacing=spacing, snr=snr)


def medians(p, channel, tissues=("wm", "gm", "csf"), pure=(0.85, 0.6, 0.6)):
    image = p.clean[channel]
    out = {}
    for tissue, limit in zip(tissues, pure):
        sel = (p.tissues[tissue] > limit) & (p.mask > 0) & (p.label == 0)
        assert sel.sum() > 20, f"too few pure {tissue} voxels"
        out[tissue] = float(np.median(image[sel]))
    return out


def lesion_vs_wm(p, channel, label_value=None):
    image = p.images[channel].astype(np.float32)
    lesion = p.label > 0 if label_value is None else p.label == label_value
    wm = (p.tissues["wm"] > 0.85) & (p.label == 0) & (p.mask > 0)
    assert lesion.sum() > 0
    return float(np.median(image[lesion])), float(np.median(image[wm]))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


# ---------------------------------------------------------------- physics per task


@pytest.mark.parametrize(
    "channel, order",
    [
        ("T1", ("wm", "gm", "csf")),  # WM > GM > CSF
        ("T2", ("csf", "gm", "wm")),
        ("PD", ("csf", "gm", "wm")),
        ("FLAIR", ("gm", "wm", "csf")),  # CSF suppressed
    ],
)
def test_ms_tissue_ordering(channel, order):
    m = medians(phantom("ms"), channel)
    values = [m[t] for t in order]
    assert values == sorted(values, reverse=True), m


@pytest.mark.parametrize("channel, sign", [("T1", -1), ("T2", 1), ("PD", 1), ("FLAIR", 1)])
def test_ms_lesion_contrast_sign(channel, sign):
    lesion, wm = lesion_vs_wm(phantom("ms"), channel)
    assert sign * (lesion - wm) > 0.05 * wm


def test_ms_lesions_inside_brain_and_counts_in_configured_ranges():
    task = get_task("ms")
    cfg = task.config
    for index in range(2):
        p = phantom("ms", index)
        assert not np.any(p.label[p.mask == 0])
        assert set(np.unique(p.label)) <= {0, 1}
        labelled = [r for r in p.records if r.labelled]
        low = cfg.small_lesions[0] + cfg.confluent_lesions[0]
        high = cfg.small_lesions[1] + cfg.confluent_lesions[1]
        assert low <= len(labelled) <= high
        # Each small plaque fits in the ball of its largest radius (plus surface waves).
        biggest = 4 / 3 * np.pi * (cfg.small_radius_mm[1] * 1.12) ** 3 / 1000
        small = [r.volume_ml for r in labelled if r.kind != "confluent"]
        assert max(small) <= biggest
        assert min(small) < 0.05  # some plaques are tiny
        dots = [r for r in p.records if r.kind == "dot"]
        assert cfg.dots[0] <= len(dots) <= cfg.dots[1]
        # The label map's volume is the rendered plaque volume, up to head scaling.
        rendered = sum(r.volume_ml for r in labelled)
        labelled_ml = p.info["lesion_volume_ml"]
        assert 0.3 * rendered < labelled_ml < 1.6 * rendered


@pytest.mark.parametrize("task, channel", [("ms", "FLAIR"), ("stroke-chronic", "T1")])
def test_noise_level_follows_snr(task, channel):
    p = phantom(task)
    sigma = p.noise_sigma[channel]
    bright = (p.clean[channel] > 10 * sigma) & (p.mask > 0)
    residual = p.images[channel].astype(np.float32)[bright] - p.clean[channel][bright]
    # Rician noise is Gaussian at high signal; rounding to integers adds 1/12.
    assert np.std(residual) == pytest.approx(np.sqrt(sigma**2 + 1 / 12), rel=0.08)
    assert abs(np.mean(residual)) < 0.1 * sigma
    assert sigma == pytest.approx(p.info["gains"][channel] / get_task(task).default_snr)


def test_no_noise_gives_clean_images_and_same_subject():
    noisy, clean = phantom("ms"), phantom("ms", snr=None)
    np.testing.assert_array_equal(noisy.label, clean.label)
    diff = np.abs(clean.images["T1"].astype(np.float32) - clean.clean["T1"])
    assert diff.max() <= 0.5 + 1e-3


def test_tumor_compartments_contrast_and_labels():
    p = phantom("tumor", spacing=3.0)
    assert set(np.unique(p.label)) <= {0, 1, 2, 3, 4}
    assert not np.any(p.label[p.mask == 0])
    values = set(np.unique(p.label)) - {0}
    assert {2, 4} <= values  # oedema and the enhancing ring are always there (high grade)
    enh, wm = lesion_vs_wm(p, "T1c", 4)
    assert enh > 1.2 * wm  # gadolinium enhancement
    enh_t1, wm_t1 = lesion_vs_wm(p, "T1", 4)
    assert enh_t1 < wm_t1
    for channel in ("T2", "FLAIR"):
        oed, wm = lesion_vs_wm(p, channel, 2)
        assert oed > 1.2 * wm
    if 1 in values:
        nec, wm = lesion_vs_wm(p, "T1", 1)
        assert nec < 0.6 * wm
    m = medians(p, "T2")
    assert m["csf"] > m["gm"] > m["wm"]


def test_tumor_mass_effect_expands_the_core():
    p = phantom("tumor", spacing=3.0)
    assert not p.info["params"]["low_grade"]
    rendered = sum(r.volume_ml for r in p.records if r.kind in ("necrosis", "enhancing"))
    voxel_ml = np.prod(p.spacing) / 1000
    subject = float(np.isin(p.label, (1, 4)).sum()) * voxel_ml
    expansion = p.info["params"]["expansion"] * p.info["scale"]
    # Inside the pushed region the template is scaled by r1/r0: volume by its cube.
    assert subject == pytest.approx(rendered * expansion**3, rel=0.3)
    assert subject > 1.1 * rendered


def test_mass_effect_radial_map():
    effect = MassEffect((0.0, 0.0, 0.0), r0=10.0, r1=14.0, decay=15.0)
    r = np.linspace(0, 80, 801)
    f = effect.template_radius(r)
    assert np.all(np.diff(f) > 0)  # no folding
    assert effect.template_radius(np.array([14.0]))[0] == pytest.approx(10.0)
    assert abs(f[-1] - 80.0) < 0.2  # far tissue stays


def test_stroke_acute_dwi_adc_physics_and_thick_slices():
    p = phantom("stroke-acute")
    assert p.spacing == pytest.approx((SPACING, SPACING, 5.0))
    dwi_lesion, dwi_wm = lesion_vs_wm(p, "DWI")
    adc_lesion, adc_wm = lesion_vs_wm(p, "ADC")
    assert dwi_lesion > 1.2 * dwi_wm
    assert adc_lesion < 0.85 * adc_wm
    adc = medians(p, "ADC")
    assert adc["csf"] > adc["gm"] > adc["wm"]
    assert 600 < adc["wm"] < 900  # 10⁻⁶ mm²/s
    dwi = medians(p, "DWI")
    assert min(dwi["gm"], dwi["wm"]) > 1.5 * dwi["csf"]
    # Pure tissues (thick slices have few pure grey-matter voxels): GM > WM > CSF on DWI.
    task = get_task("stroke-acute")
    pure = {}
    for tissue in ("wm", "gm", "csf"):
        maps = {t: np.full((2, 2, 2), float(t == tissue), np.float32) for t in ("wm", "gm", "csf")}
        for name in ("infarct", "infarct_strength", "artefact", "artefact_strength"):
            maps[name] = np.zeros((2, 2, 2), np.float32)
        signal = {m: TISSUE_SIGNAL[m] for m in ("S0", "ADC")}
        pure[tissue] = float(task.clean_signals(maps, signal)["DWI"].mean())
    assert pure["gm"] > pure["wm"] > pure["csf"]
    assert any(not r.labelled and r.kind == "artefact" for r in p.records)


def test_stroke_acute_artefacts_brighten_dwi_but_keep_adc():
    task = get_task("stroke-acute")
    shape = (4, 4, 4)
    maps = {t: np.full(shape, v, np.float32) for t, v in (("wm", 1.0), ("gm", 0.0), ("csf", 0.0))}
    for name in ("infarct", "infarct_strength", "artefact_strength"):
        maps[name] = np.zeros(shape, np.float32)
    maps["artefact"] = np.zeros(shape, np.float32)
    maps["artefact"][0] = 1.0
    maps["artefact_strength"][0] = 1.0
    signal = {"S0": {"wm": 1.0, "gm": 1.2, "csf": 2.0}, "ADC": {"wm": 0.7, "gm": 0.8, "csf": 3.0}}
    clean = task.clean_signals(maps, signal)
    out = task.outputs(clean)
    assert out["DWI"][0].mean() > 2.0 * out["DWI"][1].mean()
    np.testing.assert_allclose(out["ADC"], 0.7, atol=1e-5)
    maps["infarct"][1] = 1.0
    out = task.outputs(task.clean_signals(maps, signal))
    assert out["ADC"][1].mean() < 0.6 and out["DWI"][1].mean() > out["DWI"][2].mean()


def test_stroke_chronic_cavities_dark_and_sizes_spread():
    task = get_task("stroke-chronic")
    cfg = task.config
    volumes = []
    for index in range(3):
        p = phantom("stroke-chronic", index)
        assert not np.any(p.label[p.mask == 0])
        labelled = [r for r in p.records if r.labelled]
        assert cfg.lesions[0] <= len(labelled) <= cfg.lesions[1]
        volumes += [r.volume_ml for r in labelled]
        if p.label.any():
            lesion, wm = lesion_vs_wm(p, "T1")
            assert lesion < 0.9 * wm
        m = medians(p, "T1")
        assert m["wm"] > m["gm"] > m["csf"]
    assert max(volumes) / max(min(volumes), 1e-6) > 10  # very different sizes


def test_blob_partial_volume_matches_ellipsoid_volume():
    rng = np.random.default_rng(1)
    grid = WorkGrid((-20.0, -20.0, -20.0), (1.0, 1.0, 1.0), (41, 41, 41))
    blob = random_blob(rng, np.zeros(3), 8.0, aspect=(0.6, 0.8), roughness=0.0)
    comp = Compartment.empty(grid.shape)
    volume = render_blobs([blob], grid, comp, 1.0)
    assert volume * 1000 == pytest.approx(blob.nominal_volume_mm3, rel=0.03)
    # Brute force: fraction of 5³ sub-samples per voxel inside the ellipsoid.
    coords = np.add.outer(np.arange(41) - 20.0, (np.arange(5) - 2) / 5).ravel()
    x, y, z = np.meshgrid(coords, coords, coords, indexing="ij", sparse=True)
    rho2 = sum(
        (
            (blob.rotation[0, k] * x + blob.rotation[1, k] * y + blob.rotation[2, k] * z)
            / blob.radii[k]
        )
        ** 2
        for k in range(3)
    )
    exact = (rho2 <= 1).reshape(41, 5, 41, 5, 41, 5).mean(axis=(1, 3, 5))
    assert np.abs(comp.fraction - exact).max() < 0.35
    assert np.abs(comp.fraction - exact).mean() < 0.01


# ------------------------------------------------------------- the data set on disk


def _digest(folder):
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_same_seed_identical_files_other_seed_other_subjects(tmp_path):
    a = synthesize("ms", tmp_path / "a", subjects=2, seed=3, spacing=SPACING, test_fraction=0.5)
    b = synthesize("ms", tmp_path / "b", subjects=2, seed=3, spacing=SPACING, test_fraction=0.5)
    c = synthesize("ms", tmp_path / "c", subjects=2, seed=4, spacing=SPACING, test_fraction=0.5)
    assert _digest(a) == _digest(b)
    da, dc = _digest(a), _digest(c)
    assert da.keys() == dc.keys()
    assert all(da[k] != dc[k] for k in da if k.endswith(".nii.gz"))
    # Subject k does not depend on the number of subjects.
    one = synthesize("ms", tmp_path / "one", subjects=1, seed=3, spacing=SPACING, test_fraction=0)
    assert _digest(one)["imagesTr/ms_000_0003.nii.gz"] == da["imagesTr/ms_000_0003.nii.gz"]
    assert _digest(one)["labelsTr/ms_000.nii.gz"] == da["labelsTr/ms_000.nii.gz"]


@pytest.mark.parametrize("task", ["tumor", "stroke-acute"])
def test_layout_read_by_load_msd(tmp_path, task):
    out = synthesize(task, tmp_path / task, subjects=3, seed=0, spacing=SPACING)
    spec = json.loads((out / "dataset.json").read_text())
    t = get_task(task)
    assert spec["channel_names"] == {str(i): c for i, c in enumerate(t.channels)}
    assert spec["labels"] == {name: value for value, name in t.labels.items()}
    assert spec["file_ending"] == ".nii.gz" and spec["numTraining"] == 2
    ds = load_msd(out)
    assert ds.channel_names == list(t.channels) and ds.labels == t.labels
    assert [s.split for s in ds] == ["train", "train", "test"]
    for subject in ds:
        assert subject.label is not None and subject.mask is not None
        label = load_nifti(subject.label, dtype=None)
        mask = load_nifti(subject.mask, dtype=None)
        image = load_nifti(subject.channels[t.channels[0]])
        assert label.grid.same_as(image.grid) and mask.grid.same_as(image.grid)
        assert label.data.dtype == np.uint8 and image.grid.orientation == "RAS"
        assert not np.any(label.data[mask.data == 0])
        assert np.all(image.data[mask.data == 0] == 0)
    meta = json.loads((out / "phantoms.json").read_text())
    assert [c["case"] for c in meta["cases"]] == [s.id for s in ds]


def test_existing_output_needs_overwrite(tmp_path):
    out = synthesize("stroke-chronic", tmp_path / "x", subjects=2, seed=0, spacing=SPACING)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LesionsegError, match="overwrite"):
        synthesize("stroke-chronic", out, subjects=1, seed=0, spacing=SPACING)
    synthesize("stroke-chronic", out, subjects=1, seed=0, spacing=SPACING, overwrite=True)
    assert len(load_msd(out)) == 1  # stale cases removed
    assert (out / "notes.txt").read_text() == "mine"  # other files kept
    with pytest.raises(LesionsegError, match="unknown phantom task"):
        synthesize("brain", tmp_path / "y")


# ---------------------------------------------------------------- baseline difficulty


def test_flair_threshold_baseline_is_neither_trivial_nor_hopeless():
    scores = []
    for index in range(3):
        p = phantom("ms", index, spacing=3.0)
        flair = p.images["FLAIR"].astype(np.float64)
        brain = p.mask > 0
        z = (flair - flair[brain].mean()) / flair[brain].std()
        scores.append(dice((z > 1.5) & brain, p.label))
    assert 0.2 <= float(np.mean(scores)) <= 0.7, scores


# ----------------------------------------------------------------------------- CLI


def test_cli_synth_with_preview(tmp_path, capsys):
    out = tmp_path / "ms"
    png = tmp_path / "preview.png"
    args = ["synth", "ms", "-o", str(out), "--subjects", "1", "--spacing", "4"]
    assert main([*args, "--preview", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(load_msd(out)) == 1
    assert main(args) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--seed", "1"]) == 0
    assert main(["synth", "ms", "-o", str(tmp_path / "z"), "--subjects", "0"]) == 2


# --------------------------------------------------------------------- slice report


def test_lesion_centre_is_largest_component_centroid():
    label = np.zeros((20, 20, 20), np.uint8)
    label[2:4, 2:4, 2:4] = 1
    label[10:15, 6:9, 12:19] = 1
    assert lesion_centre(label) == (12, 7, 15)
    mask = np.zeros_like(label)
    mask[4:9, 4:9, 4:9] = 1
    assert lesion_centre(np.zeros_like(label), mask) == (6, 6, 6)


def test_views_follow_ras_axes_and_spacing(tmp_path):
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    assert view_slice(volume, "axial", (1, 2, 3)).shape == (5, 4)  # rows: posterior→anterior
    np.testing.assert_array_equal(view_slice(volume, "coronal", (1, 2, 3)), volume[:, 2, :].T)
    assert view_aspect("coronal", (1.0, 1.0, 5.0)) == 5.0
    row = SliceRow("case", {"T1": volume + 1, "FLAIR": volume + 2}, (1, 1, 5), volume > 100)
    path = save_slices([row], tmp_path / "x.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
