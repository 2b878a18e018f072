"""Decoding and the one preprocessing path every image takes.

Every image, whatever its format (PNG/JPEG), colour mode (L, RGB, RGBA, P, CMYK,
16-bit) or EXIF orientation, goes through :func:`load_grayscale` and
:func:`resize_square`, so that the encoding cannot tell the model the label
(in COVID-CT every JPEG is non-COVID and every RGBA image is COVID).

Alpha rule: images with transparency are composited onto black, the CT
background, before conversion to grayscale.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: Refuse images above this many pixels (decompression-bomb guard), overridable per call.
DEFAULT_MAX_PIXELS = 50_000_000


#: Bits per channel sample of each PIL mode (``None`` for modes this project does not know).
MODE_BIT_DEPTH = {"1": 1, "L": 8, "LA": 8, "La": 8, "P": 8, "PA": 8, "RGB": 8, "RGBA": 8, "RGBa": 8,
                  "RGBX": 8, "CMYK": 8, "YCbCr": 8, "LAB": 8, "HSV": 8, "I;16": 16, "I;16B": 16,
                  "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


class ImageDecodeError(ValueError):
    """An image file cannot be decoded completely."""


def open_complete(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image, decode every pixel, apply its EXIF orientation.

    Raises:
        ImageDecodeError: empty, not an image, truncated, or larger than ``max_pixels``;
            the message names the file and the fix.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError(f"{path}: empty file (0 bytes); replace it with the original image")
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise ImageDecodeError(
                    f"{path}: {im.width}x{im.height} pixels exceeds the limit of {max_pixels} "
                    "(decompression-bomb guard); downscale the image or raise validate.max_pixels"
                )
            im.load()  # full decode: truncated files fail here, not at the header
            fmt = im.format
            out = ImageOps.exif_transpose(im)
            out.format = fmt
            return out
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc}); replace it with an intact copy") from exc


def to_grayscale_array(im: Image.Image) -> np.ndarray:
    """Convert any PIL image to one grayscale channel.

    Returns:
        float32 array of shape (H, W) in [0, 1]. 16/32-bit images are scaled by their
        real bit depth (not clipped at 255); alpha is composited onto black.
    """
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) <= 65535 else float(2**32 - 1)
        return (np.clip(arr, 0, top) / top).astype(np.float32)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        hi = max(float(arr.max(initial=0)), 1e-12)
        return np.clip(arr / hi, 0, 1)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "CMYK":
        im = im.convert("RGB")
    if im.mode in ("LA", "PA", "RGBA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, rgba).convert("RGB")
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a (H, W) float image in [0, 1] to (size, size) with antialiased bilinear filtering."""
    im = Image.fromarray(gray.astype(np.float32), mode="F")
    out = np.asarray(im.resize((size, size), Image.BILINEAR, reducing_gap=None), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def quantise(gray: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to uint8 (round to nearest), the form images are stored in."""
    return np.round(gray * 255).astype(np.uint8)


def load_preprocessed(path: Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The project's preprocessing: decode fully, grayscale, resize.

    Returns:
        uint8 array of shape (size, size); divide by 255 for [0, 1] model input.
    """
    gray = to_grayscale_array(open_complete(path, max_pixels))
    return quantise(resize_square(gray, size))


def load_images(root: Path, paths, size: int, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Preprocess many images into one tensor.

    Args:
        root: dataset folder; ``paths`` are relative to it.
        size: output side in pixels.

    Returns:
        torch.uint8 tensor of shape (N, 1, size, size); divide by 255 for [0, 1].
    """
    import torch  # noqa: PLC0415  (keep torch out of the data-only commands' start-up)

    arrays = [load_preprocessed(Path(root) / p, size, max_pixels) for p in paths]
    if not arrays:
        return torch.zeros((0, 1, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays))[:, None]
