"""Image reading: any file we meet -> RGB uint8 ``(H, W, 3)``; label images -> int arrays.

Conversions are explicit: grayscale is repeated to 3 channels, alpha is dropped, EXIF
orientation is applied, and images deeper than 8 bits (16-bit PNG/TIFF, float TIFF) are
min-max stretched per image to 0..255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from instseg.errors import DataError

TIFF_SUFFIXES = {".tif", ".tiff"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    """Any 2-D or 3-D image array -> RGB uint8 ``(H, W, 3)`` (see module docstring)."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channel-first TIFF
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[-1] == 2:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(f"unsupported image shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        f = a.astype(np.float64)
        lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
        f = (f - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(f)
        a = np.clip(np.round(f), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a)


def _pil_array(raw: Image.Image) -> np.ndarray:
    img: Image.Image = ImageOps.exif_transpose(raw) or raw
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(img)
    if img.mode not in ("RGB", "L", "RGBA", "LA", "1"):
        img = img.convert("RGB")
    return np.asarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``; raise DataError naming the file if bad."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, None, "image file not found")
    if p.stat().st_size == 0:
        raise DataError(p, None, "image file is empty (0 bytes)")
    try:
        if p.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return to_rgb_uint8(tifffile.imread(p))
        with Image.open(p) as img:
            img.load()
            return to_rgb_uint8(_pil_array(img))
    except DataError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for corrupt files
        raise DataError(p, None, f"cannot read image ({type(exc).__name__}: {exc})") from None


def read_label_image(path: str | Path) -> np.ndarray:
    """Read a label image (8/16/32-bit PNG or TIFF) as int64 ``(H, W)``; 0 is background."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, None, "label image not found")
    try:
        if p.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            arr = np.asarray(tifffile.imread(p))
        else:
            with Image.open(p) as img:
                img.load()
                arr = np.asarray(img)
    except Exception as exc:
        raise DataError(p, None, f"cannot read label image ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 3:
        if arr.shape[-1] in (3, 4) and np.all(arr[..., :3] == arr[..., :1]):
            arr = arr[..., 0]
        else:
            raise DataError(p, None, f"label image must be single-channel, got shape {arr.shape}")
    if arr.ndim != 2:
        raise DataError(p, None, f"label image must be 2-D, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(arr == np.round(arr)):
            raise DataError(p, None, "label image has non-integer values")
    return arr.astype(np.int64)


def image_size(path: str | Path, verify: bool = False) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header; ``verify`` decodes it fully (finds truncation)."""
    p = Path(path)
    if verify:
        h, w = read_image(p).shape[:2]
        return h, w
    if not p.exists():
        raise DataError(p, None, "image file not found")
    if p.stat().st_size == 0:
        raise DataError(p, None, "image file is empty (0 bytes)")
    try:
        if p.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(p) as tf:
                shape = tf.pages[0].shape
            return int(shape[0]), int(shape[1])
        with Image.open(p) as img:
            w, h = img.size
            # PNG getexif() decodes the whole image unless the eXIf chunk precedes the pixels
            exif_ok = img.format != "PNG" or "exif" in img.info
            if exif_ok and img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: rotated 90
                w, h = h, w
        return int(h), int(w)
    except Exception as exc:
        raise DataError(p, None, f"cannot read image ({type(exc).__name__}: {exc})") from None


def is_image_file(path: Path) -> bool:
    """True if the suffix is one we read as an image."""
    return path.suffix.lower() in IMAGE_SUFFIXES


class NotAnImageError(DataError):
    """The bytes are not in an image format we read."""


class ImageTooLargeError(DataError):
    """The image has more pixels than the caller allows."""


def _tiff_bytes(data: bytes, name: str, max_pixels: int | None) -> np.ndarray:
    import io

    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tf:
        shape = [int(s) for s in tf.series[0].shape]
        plane = [s for s in shape if s > 4][-2:] or shape  # without channel / sample axes
        _check_pixels(name, int(np.prod(plane)), max_pixels)
        return to_rgb_uint8(tf.asarray())


def _check_pixels(name: str, pixels: int, max_pixels: int | None) -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(name, None, f"image has {pixels:,} pixels, the limit is {max_pixels:,}")


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Image file bytes (an upload) -> RGB uint8 ``(H, W, 3)`` the way :func:`read_image` reads
    files. The pixel count is checked from the header before decoding (ImageTooLargeError
    past ``max_pixels``); NotAnImageError for bytes in no image format; DataError (naming
    ``name``) for a corrupt or truncated image."""
    import io

    if not data:
        raise DataError(name, None, "file is empty (0 bytes)")
    try:
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_bytes(data, name, max_pixels)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(name, None, str(exc)) from None
        except Exception:
            raise NotAnImageError(name, None, "not an image (PNG, JPEG, TIFF, BMP, WebP or GIF)") from None
        with img:
            _check_pixels(name, img.size[0] * img.size[1], max_pixels)
            img.load()
            return to_rgb_uint8(_pil_array(img))
    except DataError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for corrupt files
        raise DataError(name, None, f"cannot read image ({type(exc).__name__}: {exc})") from None
