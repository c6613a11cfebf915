"""Reading and checking images: every path into the model goes through here, so bad input
gets one clear error (or one stated conversion) instead of a shape error deep in torch."""
from __future__ import annotations

from sam_edge.errors import UserError

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default largest image (width x height) any command decodes: 64 megapixels (e.g. 8000 x 8000).
#: Checked from the file header, before decoding. Raise it with the environment variable
#: ``SAM_EDGE_MAX_PIXELS`` (e.g. ``SAM_EDGE_MAX_PIXELS=200000000``); 0 removes the limit.
DEFAULT_MAX_PIXELS = 64_000_000


def max_pixels() -> int:
    """The pixel limit in force (``SAM_EDGE_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`)."""
    raw = os.environ.get("SAM_EDGE_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise ImageError(f"SAM_EDGE_MAX_PIXELS={raw!r}: expected a number of pixels (0 = no limit)") from None
    return max(0, value)


def check_pixel_limit(size: tuple[int, int], name: str) -> None:
    """Refuse an image of ``size`` (width, height) above :func:`max_pixels`, naming it."""
    limit = max_pixels()
    w, h = size
    if limit and w * h > limit:
        raise ImageError(f"{name}: {w} x {h} = {w * h / 1e6:.0f} megapixels is above the limit of "
                         f"{limit / 1e6:.0f} megapixels (set SAM_EDGE_MAX_PIXELS to raise it)")


class ImageError(UserError, ValueError):
    """An image that cannot be used, with what was expected."""


_OPEN_LOCK = threading.Lock()


def open_image(path: str | Path) -> Image.Image:
    """``PIL.Image.open`` with Pillow's decompression-bomb limit replaced by ours
    (:func:`check_pixel_limit`, from the header, before decoding): one limit, one message, and
    ``SAM_EDGE_MAX_PIXELS`` can raise it past Pillow's. Raises what ``Image.open`` raises, or
    :class:`ImageError` above the limit."""
    with _OPEN_LOCK:  # Pillow's limit is a module global: off only for this open
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    try:
        check_pixel_limit(im.size, str(path))
    except ImageError:
        im.close()
        raise
    return im


def check_rgb_uint8(image: object, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is an H x W x 3 uint8 array; otherwise raise :class:`ImageError`
    saying what was received and how to convert it."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array H x W x 3 uint8, got {type(image).__name__}")
    if image.ndim == 2:
        raise ImageError(
            f"{name}: got a 2-D (grayscale) array of shape {image.shape}; expected H x W x 3 RGB. "
            "Convert with sam_edge.to_rgb_uint8(image) or np.stack([image] * 3, -1)."
        )
    if image.ndim != 3 or image.shape[2] != 3:
        detail = f"{image.shape[2]} channels" if image.ndim == 3 else f"{image.ndim} dimensions"
        raise ImageError(
            f"{name}: got shape {image.shape} ({detail}); expected H x W x 3 RGB. "
            "Drop alpha with image[..., :3] or convert with sam_edge.to_rgb_uint8(image)."
        )
    if image.dtype != np.uint8:
        raise ImageError(
            f"{name}: got dtype {image.dtype}; expected uint8 (0..255). For 16-bit data use "
            "sam_edge.to_rgb_uint8(image), which scales 0..65535 to 0..255."
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{name}: empty image of shape {image.shape}")
    return image


def to_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a grayscale, RGBA or 16-bit array to H x W x 3 uint8, warning which conversion was
    made. Raises :class:`ImageError` for anything else."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    notes = []
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
        notes.append("16-bit -> 8-bit")
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
        notes.append("boolean -> 8-bit")
    elif np.issubdtype(image.dtype, np.floating):
        raise ImageError(
            f"{name}: got a float array ({image.dtype}); scale it to 0..255 and cast to uint8 first, "
            "the value range of float images is ambiguous"
        )
    elif image.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported dtype {image.dtype}; expected uint8 or uint16")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
        notes.append("grayscale -> RGB")
    elif image.ndim == 3 and image.shape[2] == 4:
        image = np.ascontiguousarray(image[..., :3])
        notes.append("RGBA -> RGB (alpha dropped)")
    elif image.ndim == 3 and image.shape[2] == 2:
        image = np.repeat(image[..., :1], 3, axis=2)
        notes.append("grayscale+alpha -> RGB (alpha dropped)")
    if notes:
        warnings.warn(f"{name}: converted {', '.join(notes)}", stacklevel=2)
    return check_rgb_uint8(image, name)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB. Grayscale, palette, RGBA and 16-bit files are
    converted (with a warning naming the conversion); missing or corrupt files raise
    :class:`ImageError` naming the path."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageError(f"image path is not a file: {path}")
    try:
        with open_image(path) as im:  # the pixel limit from the header, before decoding
            im.load()
            # the displayed frame (EXIF orientation applied), where users place their prompts
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im).astype(np.uint32)
                arr = (np.clip(arr, 0, 65535).astype(np.uint16))
                return to_rgb_uint8(arr, name=str(path))
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode not in ("RGB", "L", "RGBA", "LA"):
                warnings.warn(f"{path}: converted {mode} -> RGB", stacklevel=2)
                im = im.convert("RGB")
            arr = np.asarray(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused by Pillow's decompression-bomb check ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: corrupt or not an image ({exc})") from exc
    return to_rgb_uint8(arr, name=str(path))
