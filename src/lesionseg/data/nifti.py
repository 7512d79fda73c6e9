"""NIfTI input and output that never loses geometry.

Volumes are loaded with nibabel and validated (readable, NIfTI, 3D, finite).
Internally lesionseg works in the closest canonical orientation (RAS+): array
axis 0 runs left→right, axis 1 posterior→anterior, axis 2 inferior→superior,
so "sagittal flip" is always a flip of axis 0 and "axial slices" are taken
along axis 2. Every output is written back on the input's own grid with
:func:`save_nifti`, keeping the shape, affine and qform/sform codes.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from lesionseg.data.atomic import atomic_path
from lesionseg.errors import LesionsegError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
CANONICAL = ("R", "A", "S")


def is_nifti_path(path: str | Path) -> bool:
    """Return True if ``path`` has a NIfTI file name (``.nii`` or ``.nii.gz``)."""
    return str(path).endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """Return ``name`` without its ``.nii`` / ``.nii.gz`` ending."""
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Grid:
    """The voxel grid of a 3D image: shape, voxel-to-world affine and header.

    Attributes:
        shape: Number of voxels along each of the three array axes.
        affine: 4×4 voxel-to-world (RAS mm) matrix.
        header: A copy of the NIfTI header, so that outputs keep qform/sform codes,
            units and description of the input.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    header: nib.Nifti1Header = field(compare=False, repr=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (from the affine)."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def orientation(self) -> str:
        """Orientation codes of the array axes, e.g. ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.aff2axcodes(self.affine))

    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def same_as(self, other: Grid, atol: float = 1e-3) -> bool:
        """True if both grids have the same shape and affines equal within ``atol`` mm."""
        return tuple(self.shape) == tuple(other.shape) and bool(
            np.allclose(self.affine, other.affine, atol=atol, rtol=0)
        )

    def to_json(self) -> dict:
        """JSON-serialisable description (shape, affine, codes); the header is not kept."""
        return {
            "shape": list(self.shape),
            "affine": np.asarray(self.affine).tolist(),
            "qform_code": int(self.header["qform_code"]),
            "sform_code": int(self.header["sform_code"]),
        }


@dataclass
class Volume:
    """A 3D array together with its grid and where it came from."""

    data: np.ndarray
    grid: Grid
    path: Path | None = None


def _check_gzip(path: Path) -> None:
    """Read a .nii.gz stream to the end so that truncation shows up as a clear error."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise LesionsegError(f"corrupt or truncated gzip stream ({err})", path) from None


def available_memory() -> int | None:
    """Bytes of memory a new array can take, or None if unknown.

    psutil's estimate when it is installed; otherwise the machine's physical memory,
    not the free pages, which leave out the file cache the kernel hands back on demand.
    """
    try:
        import psutil
    except ImportError:
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):  # no sysconf (Windows) or no such name
            return None
    return int(psutil.virtual_memory().available)


def format_bytes(size: float) -> str:
    """``size`` in bytes as a short text with a decimal unit, e.g. ``"4.2 GB"``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000:
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} PB"


def _check_file(path: Path) -> None:
    """Raise unless ``path`` is an existing, readable file with a NIfTI name."""
    try:
        if not path.exists():
            raise LesionsegError("file not found", path)
        if path.is_dir():
            raise LesionsegError("is a folder, expected a NIfTI file", path)
        if not is_nifti_path(path):
            raise LesionsegError("not a NIfTI file name (expected .nii or .nii.gz)", path)
        with open(path, "rb") as stream:
            stream.read(1)
    except OSError as err:  # permissions, or a file the system cannot read
        raise LesionsegError(f"cannot read ({err.strerror or err})", path) from None


def _open_image(path: Path) -> nib.Nifti1Image:
    """The NIfTI image at ``path``, header read, voxel data not yet."""
    if path.name.endswith(".gz"):
        _check_gzip(path)
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for bad files
        detail = str(err).replace(f'"{path}"', "it").replace(str(path), "it")
        raise LesionsegError(f"cannot read as NIfTI ({detail})", path) from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise LesionsegError(f"not a NIfTI-1/2 image ({type(image).__name__})", path)
    return image


def _spatial_shape(
    image: nib.Nifti1Image, path: Path, volume: int | None = None
) -> tuple[int, int, int]:
    """The 3D shape of ``image``; a single-volume 4D image counts as 3D.

    ``volume``: one volume of a 4D image is read (a channel of a Decathlon v1 image).
    """
    shape = image.shape
    if volume is not None and len(shape) == 4:
        if not 0 <= volume < shape[3]:
            raise LesionsegError(f"has {shape[3]} volume(s); volume {volume} was asked for", path)
        shape = shape[:3]
    elif len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise LesionsegError(f"expected a 3D volume, found {len(image.shape)}D {image.shape}", path)
    if min(shape) < 1:
        raise LesionsegError(f"empty volume of shape {shape}", path)
    return tuple(int(s) for s in shape)


def _check_voxel_type(image: nib.Nifti1Image, path: Path) -> None:
    """Raise for voxel types that are not one real number (complex, RGB colour)."""
    stored = image.get_data_dtype()
    kind = "V" if stored.fields is not None else stored.kind
    if kind in "biuf":
        return
    what = {"c": "complex-valued voxels", "V": "colour (RGB/RGBA) voxels"}.get(kind, "voxels")
    label = image.header.get_value_label("datatype")
    # casting would keep the real part or fail: neither is an intensity the models know
    raise LesionsegError(
        f"{what} (data type {label}) are not supported: lesionseg needs one real value "
        "per voxel (e.g. float32)",
        path,
    )


def _raw_voxel_sizes(image: nib.Nifti1Image, path: Path) -> np.ndarray:
    """pixdim[1:4] as stored: nibabel silently turns 0 into 1 and negatives into their size."""
    with ImageOpener(str(path)) as stream:
        header = type(image.header).from_fileobj(stream, check=False)
    return np.asarray(header["pixdim"][1:4], dtype=np.float64)


def _affine_source(image: nib.Nifti1Image) -> str:
    """Which header field nibabel took the affine from, for messages."""
    header = image.header
    scode, qcode = int(header["sform_code"]), int(header["qform_code"])
    if scode > 0:
        return f"the sform (code {scode})"
    return f"the qform (code {qcode})" if qcode > 0 else "pixdim (no sform or qform)"


def _check_geometry(image: nib.Nifti1Image, path: Path) -> None:
    """Raise if the voxel-to-world affine is unusable: NaN, zero voxel size, singular."""
    source = _affine_source(image)
    if int(image.header["sform_code"]) <= 0:  # the affine is built from pixdim
        for axis, size in enumerate(_raw_voxel_sizes(image, path)):
            if not (np.isfinite(size) and size > 0):
                raise LesionsegError(
                    f"voxel size {size:g} mm along axis {axis} (pixdim[{axis + 1}]) in the "
                    "header; voxel sizes must be positive",
                    path,
                )
    affine = np.asarray(image.affine, dtype=np.float64)
    matrix = affine[:3, :3]
    if not np.all(np.isfinite(affine)):
        raise LesionsegError(f"the voxel-to-world affine from {source} holds NaN or Inf", path)
    if not matrix.any():
        raise LesionsegError(
            f"the voxel-to-world affine from {source} is all zeros, so singular; "
            "the header needs a valid sform or qform",
            path,
        )
    sizes = np.sqrt((matrix**2).sum(axis=0))
    for axis, size in enumerate(sizes):
        if size == 0:
            raise LesionsegError(f"voxel size is 0 mm along axis {axis} in {source}", path)
    if abs(np.linalg.det(matrix)) < 1e-6 * float(np.prod(sizes)):
        raise LesionsegError(
            f"the voxel-to-world affine from {source} is singular: its axes are not independent",
            path,
        )


def _bytes_to_read(image: nib.Nifti1Image, shape: Sequence[int], dtype: np.dtype | None) -> int:
    """Memory needed to read the voxel data: the stored array, plus the cast copy if any."""
    stored = image.get_data_dtype()
    per_voxel = stored.itemsize
    if dtype is not None and np.dtype(dtype) != stored:
        per_voxel += np.dtype(dtype).itemsize
    return math.prod(shape) * per_voxel


def _read_voxels(
    image: nib.Nifti1Image,
    shape: tuple[int, int, int],
    dtype: np.dtype | None,
    path: Path,
    volume: int | None = None,
) -> np.ndarray:
    """The voxel data as a contiguous array of ``dtype``, checking first that it fits.

    ``volume``: only that volume of a 4D image (nibabel reads just its part of the file).
    """
    needed = _bytes_to_read(image, shape, dtype)
    available = available_memory()
    if available is not None and needed > available:
        # a header can claim any size; numpy would fail with an empty MemoryError
        raise LesionsegError(
            f"{'x'.join(map(str, shape))} voxels of {image.get_data_dtype()} need about "
            f"{format_bytes(needed)} of memory to read, but only {format_bytes(available)} "
            "is available",
            path,
        )
    try:
        source = (
            image.dataobj
            if volume is None or len(image.shape) == 3
            else (image.dataobj[..., volume])
        )
        data = np.asanyarray(source).reshape(shape)
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        return np.ascontiguousarray(data)
    except MemoryError:
        raise LesionsegError(
            f"not enough memory to read the voxel data (about {format_bytes(needed)} needed)",
            path,
        ) from None
    except Exception as err:
        raise LesionsegError(f"cannot read the voxel data ({err})", path) from None


def load_nifti(
    path: str | Path,
    *,
    dtype: type | np.dtype | None = np.float32,
    allow_nonfinite: bool = False,
    volume: int | None = None,
) -> Volume:
    """Load a 3D NIfTI image, validating it.

    A 4D image with a single volume (shape ``(X, Y, Z, 1)``) is accepted and squeezed.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        dtype: dtype of the returned array (None keeps the stored one, scaled).
        allow_nonfinite: If False, NaN or Inf voxels are an error.
        volume: Read this volume of a 4D image (0-based; the Decathlon v1 layout keeps a
            subject's channels as the volumes of one file). A 3D image is read whole.

    Returns:
        The volume in its stored orientation (see :func:`to_canonical`).

    Raises:
        LesionsegError: Missing, unreadable, not NIfTI, corrupt, not 3D, complex or
            colour voxels, an unusable affine (zero voxel size, singular), too large
            for the memory, or non-finite.
    """
    path = Path(path)
    _check_file(path)
    image = _open_image(path)
    shape = _spatial_shape(image, path, volume)
    _check_voxel_type(image, path)
    _check_geometry(image, path)
    data = _read_voxels(image, shape, dtype, path, volume)
    if not allow_nonfinite and np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise LesionsegError(f"contains {bad} NaN or Inf voxels", path)
    header = image.header.copy()
    grid = Grid(shape, np.asarray(image.affine, dtype=np.float64), header)
    return Volume(data, grid, path)


def save_nifti(
    array: np.ndarray,
    grid: Grid,
    path: str | Path,
    *,
    dtype: type | np.dtype | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``array`` on ``grid`` to ``path`` atomically, keeping the grid's header codes.

    Args:
        array: 3D array of shape ``grid.shape``, or 4D ``(*grid.shape, K)`` for
            per-class maps.
        grid: The grid (shape, affine, header) to write on, usually an input's.
        path: Output file (``.nii`` or ``.nii.gz``).
        dtype: Stored data type (default: the array's).
        overwrite: If False, an existing file is an error.

    Returns:
        The path written.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise LesionsegError("output must end in .nii or .nii.gz", path)
    if tuple(array.shape[:3]) != tuple(grid.shape):
        raise ValueError(f"array shape {array.shape} does not match grid shape {grid.shape}")
    array = np.asarray(array if dtype is None else array.astype(dtype))
    header = grid.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_data_shape(array.shape)
    if array.ndim == 4:
        zooms = tuple(grid.header.get_zooms()[:3]) + (1.0,)
        header.set_zooms(zooms)
    header["scl_slope"] = np.nan  # stored values are the values: no scaling
    header["scl_inter"] = np.nan
    image = nib.Nifti1Image(array, grid.affine, header)
    qcode, scode = int(grid.header["qform_code"]), int(grid.header["sform_code"])
    image.set_qform(grid.affine, code=qcode if qcode > 0 else 0)
    image.set_sform(grid.affine, code=scode if scode > 0 else (0 if qcode > 0 else 2))
    with atomic_path(path, overwrite=overwrite, needed=array.nbytes) as tmp:
        nib.save(image, str(tmp))
    return path


@dataclass(frozen=True)
class Reorientation:
    """How a stored array maps to the canonical RAS array, and back.

    Attributes:
        original: Grid of the stored image.
        to_canonical_ornt: nibabel orientation transform from stored to RAS axes.
    """

    original: Grid
    to_canonical_ornt: np.ndarray

    @classmethod
    def for_grid(cls, grid: Grid) -> Reorientation:
        """Orientation transform that brings ``grid``'s array to the closest RAS."""
        ornt = ornt_transform(io_orientation(grid.affine), axcodes2ornt(CANONICAL))
        return cls(grid, ornt)

    @property
    def canonical_affine(self) -> np.ndarray:
        """Voxel-to-world affine of the canonical array."""
        return self.original.affine @ inv_ornt_aff(self.to_canonical_ornt, self.original.shape)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """Shape of the canonical array."""
        order = self.to_canonical_ornt[:, 0].astype(int)
        shape = [0, 0, 0]
        for src_axis, dst_axis in enumerate(order):
            shape[dst_axis] = self.original.shape[src_axis]
        return tuple(shape)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Stored orientation → canonical (works on 3D arrays and on ``(*spatial, K)``)."""
        return np.ascontiguousarray(apply_orientation(array, self.to_canonical_ornt))

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Canonical orientation → the stored orientation of the original grid."""
        back = ornt_transform(axcodes2ornt(CANONICAL), io_orientation(self.original.affine))
        return np.ascontiguousarray(apply_orientation(array, back))


def to_canonical(volume: Volume) -> tuple[Volume, Reorientation]:
    """Reorient ``volume`` to the closest canonical (RAS+) orientation.

    Returns:
        The reoriented volume and the record that inverts the reorientation.
    """
    reo = Reorientation.for_grid(volume.grid)
    data = reo.apply(volume.data)
    grid = Grid(tuple(data.shape[:3]), reo.canonical_affine, volume.grid.header)
    return Volume(data, grid, volume.path), reo
