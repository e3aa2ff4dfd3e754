"""Image reading: any file we meet -> RGB uint8 ``(H, W, 3)``; label images -> int arrays.

Conversions are explicit: grayscale is repeated to 3 channels, alpha is dropped, EXIF
orientation is applied, and images deeper than 8 bits (16-bit PNG/TIFF, float TIFF) are
min-max stretched per image to 0..255.

Pixel limit: :func:`read_image`, :func:`read_label_image` and :func:`image_size` refuse an
image with more than :func:`max_image_pixels` pixels (a DataError naming the file), checked
from the header before anything is decoded. The limit is :data:`DEFAULT_MAX_IMAGE_PIXELS`,
or the environment variable ``INSTSEG_MAX_IMAGE_PIXELS`` (0: no limit), or what
:func:`set_max_image_pixels` set last (which wins). It replaces PIL's decompression-bomb
guard for these readers (PIL warns above ~89 M pixels and refuses twice that).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from instseg.errors import DataError, InstsegError

TIFF_SUFFIXES = {".tif", ".tiff"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}

#: 2**28 = 268,435,456 pixels (16384 x 16384; 3x PIL's warning level). Such an image takes
#: 768 MiB as RGB uint8, and reading a 16-bit one stretches it through float64 (2 GiB per
#: channel): the most one image should cost on a machine with a few GiB free. Larger images
#: (slide scans) need a higher limit, or 0, and the memory that goes with it.
DEFAULT_MAX_IMAGE_PIXELS = 2**28
MAX_PIXELS_ENV = "INSTSEG_MAX_IMAGE_PIXELS"
_max_pixels_set: int | None = None  # set_max_image_pixels' value; None: environment/default


def set_max_image_pixels(n: int | None) -> None:
    """Set the pixel limit of the readers (0: no limit; ``None``: back to the environment
    variable ``INSTSEG_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_IMAGE_PIXELS`)."""
    global _max_pixels_set
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 0):
        raise ValueError(f"max image pixels must be an integer >= 0, got {n!r}")
    _max_pixels_set = None if n is None else int(n)


def max_image_pixels() -> int | None:
    """The pixel limit in force (see the module docstring); ``None`` when there is none."""
    n = _max_pixels_set
    if n is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_IMAGE_PIXELS
        try:
            n = int(text)
        except ValueError:
            n = -1
        if n < 0:
            raise InstsegError(f"{MAX_PIXELS_ENV} must be an integer >= 0, got {text!r}")
    return n or None


def check_image_pixels(path: str | Path, pixels: int, limit: int | None = None, setting: str = MAX_PIXELS_ENV) -> None:
    """ImageTooLargeError naming ``path`` if ``pixels`` is over ``limit`` (default
    :func:`max_image_pixels`); ``setting`` names what sets the limit in the message."""
    limit = max_image_pixels() if limit is None else limit
    if limit is not None and pixels > limit:
        message = f"image has {pixels:,} pixels, over the limit of {limit:,} ({setting})"
        raise ImageTooLargeError(path, None, message)


_pil_lock = threading.Lock()
_pil_users = 0
_pil_saved: int | None = None


@contextmanager
def _pil_guard_at_our_limit() -> Iterator[None]:
    """Within the block, PIL's bomb guard sits at our limit (warning above it, error above
    twice it) so that it never refuses an image ours allows; restored when the last
    concurrent reader leaves."""
    global _pil_users, _pil_saved
    limit = max_image_pixels()
    with _pil_lock:
        if _pil_users == 0:
            _pil_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = limit
        _pil_users += 1
    try:
        yield
    finally:
        with _pil_lock:
            _pil_users -= 1
            if _pil_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_saved


def _open_pil(p: Path) -> Image.Image:
    """``Image.open`` under our limit; the header's pixel count is checked before decoding."""
    try:
        img = Image.open(p)
    except Image.DecompressionBombError:  # PIL's guard (at our limit) refuses twice the limit
        limit = max_image_pixels() or 0
        message = f"image has over {2 * limit:,} pixels, over the limit of {limit:,}"
        raise ImageTooLargeError(p, None, f"{message} ({MAX_PIXELS_ENV})") from None
    try:
        check_image_pixels(p, img.size[0] * img.size[1])
    except DataError:
        img.close()
        raise
    return img


def _tiff_pixels(shape: tuple[int, ...], axes: str) -> int:
    """Pixels of a TIFF series: the product of its axes but samples/channels (S, C)."""
    return int(np.prod([n for n, ax in zip(shape, axes) if ax not in "SC"], dtype=np.int64))


def _read_tiff(p: Path) -> np.ndarray:
    """The first series of a TIFF file, its size checked from the header first."""
    import tifffile

    with tifffile.TiffFile(p) as tf:
        series = tf.series[0]
        check_image_pixels(p, _tiff_pixels(tuple(series.shape), series.axes))
        return np.asarray(tf.asarray())


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
            return to_rgb_uint8(_read_tiff(p))
        with _pil_guard_at_our_limit(), _open_pil(p) as img:
            img.load()
            return to_rgb_uint8(_pil_array(img))
    except InstsegError:
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
            arr = _read_tiff(p)
        else:
            with _pil_guard_at_our_limit(), _open_pil(p) as img:
                img.load()
                arr = np.asarray(img)
    except InstsegError:
        raise
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
                series = tf.series[0]
                check_image_pixels(p, _tiff_pixels(tuple(series.shape), series.axes))
            return int(shape[0]), int(shape[1])
        with _pil_guard_at_our_limit(), _open_pil(p) as img:
            w, h = img.size
            # PNG getexif() decodes the whole image unless the eXIf chunk precedes the pixels
            exif_ok = img.format != "PNG" or "exif" in img.info
            if exif_ok and img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: rotated 90
                w, h = h, w
        return int(h), int(w)
    except InstsegError:
        raise
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
        series = tf.series[0]
        check_image_pixels(name, _tiff_pixels(tuple(series.shape), series.axes), max_pixels, "--max-pixels")
        return to_rgb_uint8(tf.asarray())


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
        with _pil_guard_at_our_limit():  # as read_image: PIL's guard never refuses first
            try:
                img = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as exc:
                raise ImageTooLargeError(name, None, str(exc)) from None
            except Exception:
                raise NotAnImageError(name, None, "not an image (PNG, JPEG, TIFF, BMP, WebP or GIF)") from None
            with img:
                check_image_pixels(name, img.size[0] * img.size[1], max_pixels, "--max-pixels")
                img.load()
                return to_rgb_uint8(_pil_array(img))
    except DataError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for corrupt files
        raise DataError(name, None, f"cannot read image ({type(exc).__name__}: {exc})") from None
