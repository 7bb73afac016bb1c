"""Decoding image inputs into RGB PIL images, and hashing their content.

Image experts accept file paths (PNG, JPEG, TIFF, DICOM), encoded bytes, numpy
arrays and PIL images. Whatever comes in leaves as an 8-bit RGB
:class:`PIL.Image.Image`: grayscale and 16-bit medical images are windowed to
``0..255`` and repeated over three channels, because the pretrained image
backbones expect RGB input.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from typing import Any

import numpy as np
from PIL import Image

from ..exceptions import ItemReadError, MissingExtraError

_CHUNK = 1 << 20
_DICOM_SUFFIXES = (".dcm", ".dicom")
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
# PIL modes that ``Image.convert("RGB")`` would clip or misread: 32-bit
# integer, 16-bit and float images go through the numpy windowing instead.
_WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def _describe(item: Any) -> str:
    """Short description of an item for error messages (never the full data)."""
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape} and dtype {item.dtype}"
    if isinstance(item, Image.Image):
        return f"PIL image of mode {item.mode!r} and size {item.size}"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"{len(item)} bytes"
    if isinstance(item, (str, os.PathLike)):
        return f"file {os.fspath(item)!r}"
    return f"object of type {type(item).__name__}"


# -- arrays ------------------------------------------------------------------
def _to_uint8(array: np.ndarray, *, what: str) -> np.ndarray:
    """Scale a numeric array to ``uint8``.

    ``uint8`` passes through and booleans become 0/255. Floats already within
    ``[0, 1]`` are multiplied by 255; any other range (16-bit, Hounsfield
    units, arbitrary floats) is windowed to its own min..max, the usual
    display window for medical images. A constant image becomes all zeros.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ItemReadError(
            f"Cannot read {what}: expected a numeric image array (uint8, uint16, "
            f"float, ...). Got dtype {array.dtype} instead."
        )
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ItemReadError(
            f"Cannot read {what}: the image contains NaN or infinite values. "
            "Replace them before embedding."
        )
    low, high = float(values.min()), float(values.max())
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def array_to_image(array: np.ndarray, *, what: str | None = None) -> Image.Image:
    """Convert an ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array to RGB.

    The alpha channel of an ``(H, W, 4)`` array is dropped.
    """
    what = what or _describe(array)
    array = np.asarray(array)
    shape_ok = (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))) and (
        array.size > 0
    )
    if not shape_ok:
        raise ItemReadError(
            f"Cannot read {what}: expected an image array of shape (H, W), (H, W, 1), "
            f"(H, W, 3) or (H, W, 4). Got shape {array.shape} instead."
        )
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    pixels = _to_uint8(array, what=what)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


# -- PIL ---------------------------------------------------------------------
def pil_to_rgb(image: Image.Image, *, what: str | None = None) -> Image.Image:
    """Convert any PIL image to 8-bit RGB, windowing 16-bit and float modes."""
    what = what or _describe(image)
    try:
        image.load()
        if image.mode == "RGB":
            return image
        if image.mode in _WIDE_MODES:
            return array_to_image(np.asarray(image), what=what)
        return image.convert("RGB")
    except ItemReadError:
        raise
    except (OSError, ValueError, SyntaxError, TypeError) as exc:
        raise ItemReadError(f"Cannot read {what}: {exc}") from exc


# -- DICOM -------------------------------------------------------------------
def _import_pydicom():
    try:
        import pydicom
    except ImportError as exc:
        raise MissingExtraError(
            "Reading DICOM files needs pydicom, which is not installed. Install it "
            'with: pip install "medmix_sklearn[dicom]"'
        ) from exc
    return pydicom


def _looks_like_dicom(source: str | io.BytesIO) -> bool:
    if isinstance(source, str):
        if source.lower().endswith(_DICOM_SUFFIXES):
            return True
        with open(source, "rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    else:
        head = source.getvalue()[: _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)]
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def _dicom_luts():
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut  # pydicom >= 3
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def _read_dicom(source: str | io.BytesIO, *, what: str) -> Image.Image:
    """Decode a DICOM image for display, with pydicom's modality and VOI LUTs.

    The modality LUT (rescale slope and intercept) comes first, then the file's
    first window (WindowCenter/WindowWidth) or VOI LUT when it has one; the
    result is stretched to 0..255 (to the image's own min..max when the file has
    no window), and MONOCHROME1 is inverted.
    """
    pydicom = _import_pydicom()
    try:
        ds = pydicom.dcmread(source)
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many types for bad or unsupported files
        raise ItemReadError(f"Cannot read {what} as DICOM: {exc}") from exc
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    # A multi-frame series: embed its first frame.
    if (samples == 1 and pixels.ndim == 3) or (samples > 1 and pixels.ndim == 4):
        pixels = pixels[0]
    if samples == 1:
        try:
            apply_modality_lut, apply_voi_lut = _dicom_luts()
            # Rescale slope/intercept, or the modality LUT, as pydicom applies them.
            values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
            if "WindowCenter" in ds or "VOILUTSequence" in ds:
                # The file's own window (or VOI LUT) is the display the modality intended.
                values = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
        except Exception as exc:  # a malformed LUT or window element
            raise ItemReadError(f"Cannot read {what} as DICOM: {exc}") from exc
        # Without a window in the file, its min..max is the display window.
        low, high = float(values.min()), float(values.max())
        if high > low:
            values = (values - low) * (255.0 / (high - low))
        else:
            values = np.zeros_like(values)
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            gray = 255 - gray
        return array_to_image(gray, what=what)
    return array_to_image(pixels, what=what)


# -- the public entry points ---------------------------------------------------
def _open_source(item: Any) -> tuple[str | io.BytesIO, str]:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(item)), _describe(item)
    path = os.fspath(item)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    what = f"file {path!r}"
    if not path:
        raise ItemReadError("Cannot read an image from an empty path.")
    if not os.path.isfile(path):
        raise ItemReadError(f"Cannot read {what}: no such file.")
    return path, what


def load_image(item: Any) -> Image.Image:
    """Decode one image item into an 8-bit RGB PIL image.

    Parameters
    ----------
    item : str, os.PathLike, bytes, ndarray or PIL.Image.Image
        A path to a PNG, JPEG, TIFF or DICOM file (DICOM is recognised by its
        ``.dcm`` suffix or the ``DICM`` marker), the encoded bytes of such a
        file, an image array of shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``
        or ``(H, W, 4)``, or a PIL image.

    Returns
    -------
    image : PIL.Image.Image
        Mode ``"RGB"``.

    Raises
    ------
    ItemReadError
        The item is missing, corrupt or not an image.
    MissingExtraError
        The item is a DICOM file and pydicom is not installed.
    """
    if isinstance(item, Image.Image):
        return pil_to_rgb(item)
    if isinstance(item, np.ndarray):
        return array_to_image(item)
    if not isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        raise ItemReadError(
            "Cannot read an image from an "
            f"{_describe(item)}: expected a file path, encoded bytes, a numpy array "
            "or a PIL image."
        )
    source, what = _open_source(item)
    try:
        is_dicom = _looks_like_dicom(source)
    except OSError as exc:
        raise ItemReadError(f"Cannot read {what}: {exc}") from exc
    if is_dicom:
        return _read_dicom(source, what=what)
    try:
        with Image.open(source) as image:
            image.load()
            return pil_to_rgb(image, what=what).copy()
    except ItemReadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ItemReadError(f"Cannot read {what} as an image: {exc}") from exc


def image_content_key(item: Any) -> str:
    """Hex digest of an image item's content.

    Files are hashed by their bytes (read in chunks), so the same file under
    two paths has one key. Arrays are hashed with their shape and dtype; PIL
    images with their mode, size and (palette images) palette.
    """
    digest = hashlib.sha256()
    if isinstance(item, Image.Image):
        try:
            data = item.tobytes()
        except (OSError, ValueError) as exc:
            raise ItemReadError(f"Cannot read {_describe(item)}: {exc}") from exc
        digest.update(f"pil\0{item.mode}\0{item.size}\0".encode())
        digest.update(data)
        # A palette image's bytes are indices: the palette decides the colours.
        palette = item.getpalette() if item.mode in ("P", "PA") else None
        if palette:
            digest.update(b"\0palette\0" + bytes(palette))
        return digest.hexdigest()
    if isinstance(item, np.ndarray):
        digest.update(f"array\0{item.dtype.str}\0{item.shape}\0".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
        return digest.hexdigest()
    if isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(b"file\0")
        digest.update(bytes(item))
        return digest.hexdigest()
    if not isinstance(item, (str, os.PathLike)):
        raise ItemReadError(
            f"Cannot read an image from an {_describe(item)}: expected a file path, "
            "encoded bytes, a numpy array or a PIL image."
        )
    path, what = _open_source(item)
    digest.update(b"file\0")
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ItemReadError(f"Cannot read {what}: {exc}") from exc
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, cached per process by (path, mtime, size).

    Used for weight files, which are large and hashed on every fingerprint.
    """
    path = os.path.abspath(os.fspath(path))
    stat = os.stat(path)
    return _file_sha256(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
