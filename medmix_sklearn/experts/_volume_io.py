"""Decoding 3-D images (NIfTI files, DICOM series, arrays) and hashing their content.

Every volume leaves as a :class:`Volume`: a float32 array in patient axes
``(z, y, x)`` with z toward the head (superior), y toward the back (posterior)
and x toward the patient's left, which is how a standard axial DICOM series is
stored and displayed (radiological convention). Its voxel spacing is in
millimetres, in the same order. CT intensities are Hounsfield units (DICOM
rescale slope and intercept applied; NIfTI scaling applied by nibabel).

NIfTI files and DICOM series are turned into these axes from their affine
(NIfTI) or their ``ImagePositionPatient`` and ``ImageOrientationPatient`` tags
(DICOM), by permuting and flipping axes only: an oblique acquisition keeps its
voxel grid and is assigned to the closest patient axes. Arrays are taken to be
in these axes already, with 1 mm spacing unless given as ``(array, spacing)``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import ItemReadError, MissingExtraError
from ._io import file_sha256, image_content_key

__all__ = [
    "Volume",
    "read_volume",
    "volume_content_key",
    "resample_volume",
    "series_files",
]

_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh", ".hdr", ".img")
_DICOM_SUFFIXES = (".dcm", ".dicom")
_DICOM_MAGIC = b"DICM"
# Slice gaps may differ by this fraction of their median before the series is
# refused as having a missing slice.
_GAP_TOLERANCE = 0.1


@dataclass(frozen=True)
class Volume:
    """A decoded 3-D image.

    Attributes
    ----------
    array : ndarray of shape (n_z, n_y, n_x), dtype float32
        Voxels in patient axes: z toward superior, y toward posterior, x toward
        the patient's left.
    spacing : tuple of float
        Voxel size in mm along (z, y, x).
    window : tuple of float or None
        The display window stored with the image (DICOM ``WindowCenter`` and
        ``WindowWidth`` of the first slice), as (low, high); None if absent.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    window: tuple[float, float] | None = None


def _describe(item: Any) -> str:
    if isinstance(item, Volume):
        return f"volume of shape {item.array.shape}"
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape} and dtype {item.dtype}"
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        return f"folder {path!r}" if os.path.isdir(path) else f"file {path!r}"
    return f"object of type {type(item).__name__}"


_EXPECTED = (
    "expected a NIfTI file (.nii, .nii.gz), a folder holding one DICOM series, a 3-D "
    "array, or a tuple (array, spacing)"
)


def _check_spacing(spacing, *, what: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ItemReadError(
            f"Cannot read {what}: the spacing must be three positive numbers (mm along "
            f"z, y, x). Got {spacing!r} instead."
        )
    return values


def _check_array(array, *, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.size == 0 or min(array.shape) < 1:
        raise ItemReadError(
            f"Cannot read {what}: expected a 3-D volume of shape (z, y, x). Got shape "
            f"{array.shape} instead."
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        if array.dtype != np.bool_:
            raise ItemReadError(
                f"Cannot read {what}: expected a numeric volume. Got dtype {array.dtype}."
            )
    values = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(values)):
        raise ItemReadError(
            f"Cannot read {what}: the volume contains NaN or infinite values. Replace "
            "them before embedding."
        )
    return np.ascontiguousarray(values)


# -- orientation --------------------------------------------------------------
def to_patient_axes(data: np.ndarray, affine: np.ndarray, *, what: str) -> Volume:
    """Permute and flip ``data`` into (superior, posterior, left) axes.

    ``affine`` maps voxel indices to RAS+ millimetres (the NIfTI convention).
    """
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    world = np.abs(matrix).argmax(axis=0)  # the world axis each array axis runs along
    if sorted(world.tolist()) != [0, 1, 2]:
        raise ItemReadError(
            f"Cannot read {what}: its orientation is degenerate (two array axes run "
            f"along the same patient axis; affine {matrix.round(3).tolist()})."
        )
    # Target axes: S (+z of RAS), P (-y of RAS), L (-x of RAS).
    order = [int(np.flatnonzero(world == w)[0]) for w in (2, 1, 0)]
    wanted_sign = (1.0, -1.0, -1.0)
    volume = np.transpose(data, order)
    for target, (axis, sign) in enumerate(zip(order, wanted_sign)):
        if np.sign(matrix[world[axis], axis]) != sign:
            volume = np.flip(volume, axis=target)
    spacing = tuple(float(np.linalg.norm(matrix[:, axis])) for axis in order)
    return Volume(_check_array(volume, what=what), _check_spacing(spacing, what=what))


# -- NIfTI --------------------------------------------------------------------
def _import_nibabel():
    try:
        import nibabel
    except ImportError as exc:
        raise MissingExtraError(
            "Reading NIfTI files needs nibabel, which is not installed. Install it with: "
            'pip install "medmix_sklearn[volumes]"'
        ) from exc
    return nibabel


def _read_nifti(path: str, *, what: str) -> Volume:
    nibabel = _import_nibabel()
    try:
        image = nibabel.load(path)
        data = np.asanyarray(image.dataobj)  # scl_slope / scl_inter applied
        affine = image.affine
    except Exception as exc:  # nibabel raises many types for bad files
        raise ItemReadError(f"Cannot read {what} as NIfTI: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ItemReadError(
            f"Cannot read {what}: expected a 3-D image, but it has shape {data.shape}. "
            "Split a 4-D series into one file per volume."
        )
    return to_patient_axes(data, affine, what=what)


# -- DICOM series ---------------------------------------------------------------
def _import_pydicom():
    try:
        import pydicom
    except ImportError as exc:
        raise MissingExtraError(
            "Reading DICOM series needs pydicom, which is not installed. Install it with: "
            'pip install "medmix_sklearn[dicom]"'
        ) from exc
    return pydicom


def _is_dicom_file(path: str) -> bool:
    if path.lower().endswith(_DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == _DICOM_MAGIC


def series_files(folder: str) -> list[str]:
    """The DICOM files of a series folder, sorted by name.

    A file counts when its name ends in ``.dcm``/``.dicom`` or it carries the
    ``DICM`` marker; hidden files and subfolders are ignored.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise ItemReadError(f"Cannot read folder {folder!r}: {exc}") from exc
    paths = [
        os.path.join(folder, n)
        for n in names
        if not n.startswith(".") and os.path.isfile(os.path.join(folder, n))
    ]
    return [p for p in paths if _is_dicom_file(p)]


def _floats(value, n: int) -> np.ndarray | None:
    try:
        values = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if values.shape == (n,) and np.all(np.isfinite(values)) else None


def _first_number(value, default: float) -> float:
    if value is None:
        return default
    try:
        if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
            value = value[0]
        number = float(value)
    except (TypeError, ValueError, IndexError):
        return default
    return number if np.isfinite(number) else default


def _matrix_size(ds) -> tuple[int, int]:
    try:
        return int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        return (0, 0)


def _read_dicom_series(folder: str, *, what: str) -> Volume:
    pydicom = _import_pydicom()
    files = series_files(folder)
    if not files:
        raise ItemReadError(
            f"Cannot read {what}: it holds no DICOM file (none ends in .dcm or carries "
            "the DICM marker). Pass the folder of one DICOM series."
        )
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise ItemReadError(f"Cannot read DICOM file {path!r} of {what}: {exc}") from exc
        if "PixelData" not in ds:
            continue  # DICOMDIR, structured reports, presentation states
        slices.append((path, ds))
    if len(slices) < 2:
        raise ItemReadError(
            f"Cannot read {what}: a volume needs at least 2 image slices; it holds "
            f"{len(slices)}. A single DICOM image is read by ImageExpert."
        )
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise ItemReadError(
            f"Cannot read {what}: it mixes {len(series)} series (SeriesInstanceUID "
            f"{sorted(series)[:3]}...). Put each series in its own folder."
        )
    first_path, first = slices[0]
    orientation = _floats(getattr(first, "ImageOrientationPatient", None), 6)
    if orientation is None:
        raise ItemReadError(
            f"Cannot read {what}: {first_path!r} has no valid ImageOrientationPatient, "
            "so the slices cannot be placed in space."
        )
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    shape = _matrix_size(first)
    placed = []
    for path, ds in slices:
        position = _floats(getattr(ds, "ImagePositionPatient", None), 3)
        if position is None:
            raise ItemReadError(
                f"Cannot read {what}: {path!r} has no valid ImagePositionPatient, so "
                "the slices cannot be ordered."
            )
        other = _floats(getattr(ds, "ImageOrientationPatient", None), 6)
        if other is None or not np.allclose(other, orientation, atol=1e-3):
            raise ItemReadError(
                f"Cannot read {what}: {path!r} is oriented differently from "
                f"{first_path!r}; a series folder must hold parallel slices."
            )
        size = _matrix_size(ds)
        if size != shape:
            raise ItemReadError(
                f"Cannot read {what}: {path!r} is {size[0]}x{size[1]} pixels but "
                f"{first_path!r} is {shape[0]}x{shape[1]}."
            )
        placed.append((float(position @ normal), position, path, ds))
    placed.sort(key=lambda entry: entry[0])
    offsets = np.array([entry[0] for entry in placed])
    gaps = np.diff(offsets)
    if np.any(gaps <= 1e-4):
        i = int(np.argmin(gaps))
        raise ItemReadError(
            f"Cannot read {what}: {placed[i][2]!r} and {placed[i + 1][2]!r} lie at the "
            "same position. Remove the duplicate slice."
        )
    median = float(np.median(gaps))
    if np.any(np.abs(gaps - median) > _GAP_TOLERANCE * median):
        i = int(np.argmax(np.abs(gaps - median)))
        raise ItemReadError(
            f"Cannot read {what}: the slices are not evenly spaced ({gaps[i]:.3g} mm "
            f"between {placed[i][2]!r} and {placed[i + 1][2]!r}, {median:.3g} mm "
            "elsewhere). A slice may be missing."
        )
    pixel_spacing = _floats(getattr(first, "PixelSpacing", None), 2)
    if pixel_spacing is None or np.any(pixel_spacing <= 0):
        pixel_spacing = np.array([1.0, 1.0])
    data = np.empty((len(placed), *shape), dtype=np.float32)
    for k, (_, _, path, ds) in enumerate(placed):
        try:
            pixels = np.asarray(ds.pixel_array, dtype=np.float32)
        except Exception as exc:
            raise ItemReadError(f"Cannot decode the pixels of {path!r}: {exc}") from exc
        if pixels.shape != shape:
            raise ItemReadError(
                f"Cannot read {what}: {path!r} holds pixels of shape {pixels.shape}; "
                f"expected one {shape[0]}x{shape[1]} slice (multi-frame and colour "
                "files are not slices of a series)."
            )
        slope = _first_number(getattr(ds, "RescaleSlope", None), 1.0)
        intercept = _first_number(getattr(ds, "RescaleIntercept", None), 0.0)
        data[k] = pixels * slope + intercept
    # Voxel (k, i, j) -> LPS mm; array axes: slice, row (along col), column (along row).
    step = (placed[-1][1] - placed[0][1]) / (len(placed) - 1)
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = col * pixel_spacing[0]
    lps[:3, 2] = row * pixel_spacing[1]
    lps[:3, 3] = placed[0][1]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    volume = to_patient_axes(data, ras, what=what)
    center = getattr(first, "WindowCenter", None)
    width = getattr(first, "WindowWidth", None)
    window = None
    if center is not None and width is not None:
        c, w = _first_number(center, np.nan), _first_number(width, np.nan)
        if np.isfinite(c) and np.isfinite(w) and w > 0:
            window = (c - w / 2.0, c + w / 2.0)
    return Volume(volume.array, volume.spacing, window)


# -- entry points ----------------------------------------------------------------
def read_volume(item: Any) -> Volume:
    """Decode one volume item.

    Parameters
    ----------
    item : str, os.PathLike, ndarray, tuple or Volume
        A NIfTI file (``.nii``, ``.nii.gz``; also ``.mgz`` and Analyze), a
        folder holding the DICOM files of one series, a 3-D array in (z, y, x)
        patient axes with 1 mm voxels, or a tuple ``(array, spacing)`` with the
        spacing in mm along (z, y, x).

    Returns
    -------
    volume : Volume

    Raises
    ------
    ItemReadError
        The item is missing, corrupt, or not a volume.
    MissingExtraError
        nibabel (NIfTI) or pydicom (DICOM) is not installed.
    """
    if isinstance(item, Volume):
        return item
    if isinstance(item, np.ndarray):
        what = _describe(item)
        return Volume(_check_array(item, what=what), (1.0, 1.0, 1.0))
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        what = _describe(item[0])
        spacing = _check_spacing(item[1], what=what)
        return Volume(_check_array(item[0], what=what), spacing)
    if not isinstance(item, (str, os.PathLike)):
        raise ItemReadError(f"Cannot read a volume from an {_describe(item)}: {_EXPECTED}.")
    path = os.fspath(item)
    if not path:
        raise ItemReadError(f"Cannot read a volume from an empty path: {_EXPECTED}.")
    if os.path.isdir(path):
        return _read_dicom_series(path, what=f"folder {path!r}")
    if not os.path.isfile(path):
        raise ItemReadError(f"Cannot read file {path!r}: no such file or folder.")
    if path.lower().endswith(_NIFTI_SUFFIXES):
        return _read_nifti(path, what=f"file {path!r}")
    if _is_dicom_file(path):
        raise ItemReadError(
            f"Cannot read file {path!r} as a volume: it is a single DICOM file. Pass the "
            "folder that holds the whole series."
        )
    raise ItemReadError(f"Cannot read file {path!r} as a volume: {_EXPECTED}.")


def volume_content_key(item: Any) -> str:
    """Hex digest of a volume item's content.

    A file is hashed by its bytes (as an image file would be); a DICOM series
    folder by the sorted hashes of its DICOM files, so that renaming or moving
    the folder or its files keeps the key; an array by its dtype, shape and
    bytes, with the spacing when given.
    """
    if isinstance(item, Volume):
        item = (item.array, item.spacing)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        array = item[0]
        spacing = _check_spacing(item[1], what=_describe(array))
        digest = hashlib.sha256(f"volume\0{spacing!r}\0".encode())
        digest.update(f"array\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
    if isinstance(item, np.ndarray):
        return image_content_key(item)
    if not isinstance(item, (str, os.PathLike)):
        raise ItemReadError(f"Cannot read a volume from an {_describe(item)}: {_EXPECTED}.")
    path = os.fspath(item)
    if path and os.path.isdir(path):
        files = series_files(path)
        if not files:
            raise ItemReadError(
                f"Cannot read folder {path!r}: it holds no DICOM file (none ends in .dcm "
                "or carries the DICM marker). Pass the folder of one DICOM series."
            )
        try:
            hashes = sorted(file_sha256(f) for f in files)
        except OSError as exc:
            raise ItemReadError(f"Cannot read folder {path!r}: {exc}") from exc
        return hashlib.sha256(("dicom-series\0" + "\0".join(hashes)).encode()).hexdigest()
    return image_content_key(item)


def resample_volume(volume: Volume, spacing) -> Volume:
    """Trilinear resampling to ``spacing`` (mm along z, y, x).

    The first and last voxel centres along each axis are kept; the voxel count
    becomes ``round((n - 1) * old / new) + 1``.
    """
    import torch

    target = tuple(float(s) for s in spacing)
    shape = tuple(
        max(1, int(round((n - 1) * old / new)) + 1)
        for n, old, new in zip(volume.array.shape, volume.spacing, target)
    )
    if shape == volume.array.shape:
        return Volume(volume.array, target, volume.window)
    tensor = torch.from_numpy(np.ascontiguousarray(volume.array))[None, None]
    with torch.inference_mode():
        out = torch.nn.functional.interpolate(
            tensor, size=shape, mode="trilinear", align_corners=True
        )
    return Volume(out[0, 0].numpy().copy(), target, volume.window)
