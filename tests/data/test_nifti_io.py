import nibabel as nib
import numpy as np
import pytest

from lesionseg.data.nifti import Reorientation, load_nifti, save_nifti, to_canonical
from lesionseg.errors import LesionsegError
from tests.conftest import write_nifti


def oblique_lps_affine():
    """LPS orientation, anisotropic voxels and a 10° rotation about the S axis."""
    theta = np.deg2rad(10)
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-0.9, -1.1, 3.0])
    affine[:3, 3] = [40.0, 60.0, -20.0]
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_save_keeps_grid_and_codes(tmp_path, suffix):
    affine = oblique_lps_affine()
    data = np.random.default_rng(0).random((7, 9, 5)).astype(np.float32)
    src = write_nifti(tmp_path / f"in{suffix}", data, affine, codes=(1, 2))
    vol = load_nifti(src)
    assert vol.grid.orientation == "LPS"
    out = save_nifti(vol.data * 2, vol.grid, tmp_path / f"out{suffix}")
    img = nib.load(str(out))
    assert img.shape == data.shape
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 2
    np.testing.assert_allclose(np.asanyarray(img.dataobj), data * 2, rtol=1e-6)


def test_canonical_round_trip_moves_world_coordinates_with_the_data(tmp_path):
    affine = oblique_lps_affine()
    data = np.zeros((7, 9, 5), np.float32)
    data[1, 2, 3] = 1
    vol = load_nifti(write_nifti(tmp_path / "a.nii.gz", data, affine))
    canon, reo = to_canonical(vol)
    assert canon.grid.orientation == "RAS"
    assert canon.data.shape == reo.canonical_shape == (7, 9, 5)
    # the marked voxel sits at the same world position in both arrays
    world_in = affine @ [1, 2, 3, 1]
    idx = np.argwhere(canon.data == 1)[0]
    np.testing.assert_allclose(canon.grid.affine @ [*idx, 1], world_in, atol=1e-6)
    back = reo.invert(canon.data)
    np.testing.assert_array_equal(back, data)


def test_reorientation_handles_permuted_axes(tmp_path):
    affine = np.array([[0, 0, 2.0, 0], [-1.0, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    vol = load_nifti(write_nifti(tmp_path / "p.nii", data, affine))
    reo = Reorientation.for_grid(vol.grid)
    canon = reo.apply(data)
    assert canon.shape == reo.canonical_shape == (6, 4, 5)
    np.testing.assert_array_equal(reo.invert(canon), data)
    probs = np.stack([canon, -canon], axis=-1)
    np.testing.assert_array_equal(reo.invert(probs)[..., 1], -data)


def test_single_volume_4d_is_squeezed(tmp_path):
    vol = load_nifti(write_nifti(tmp_path / "s.nii.gz", np.ones((4, 4, 4, 1), np.float32)))
    assert vol.data.shape == (4, 4, 4)


def test_overwrite_refused_without_flag(tmp_path):
    vol = load_nifti(write_nifti(tmp_path / "a.nii.gz", np.ones((3, 3, 3), np.float32)))
    save_nifti(vol.data, vol.grid, tmp_path / "b.nii.gz")
    with pytest.raises(LesionsegError, match="exists already"):
        save_nifti(vol.data, vol.grid, tmp_path / "b.nii.gz", overwrite=False)
