"""The one function that turns image bytes into model pixels (PIL + numpy, no torch).

``to_pixels(data, (C, H, W))`` is used wherever an image file becomes model input: the
app for every upload, the trainer's imagefolder reader and the ingest check. Training
and serving therefore see the same pixels for the same bytes.

What it does, in this order (each step on as few pixels as possible):

1. refuse empty or unreadable bytes, and refuse a picture of more than ``max_pixels``
   from its header alone (a decompression bomb costs nothing);
2. decode at reduced size where the format can (JPEG: libjpeg's DCT scaling, "draft";
   ``draft=False`` decodes every pixel, as the app did before: the serving benchmark's
   baseline), then shrink by an integer factor (``Image.reduce``, a box filter) while the picture is
   still more than ``REDUCING_GAP`` times the target size: full-size pixels are never
   converted, copied to float or composited;
3. apply the EXIF orientation, rescale 16-bit/32-bit/float pictures to 8 bits by the
   type's range (not clipped), composite transparency onto white, convert to "L" or "RGB";
4. exactly one resize to ``W x H`` (bilinear), unless the size already fits.

The result is a contiguous ``uint8`` array ``C x H x W``. :func:`probe` reads the header
only and estimates the memory the decode will take, so a server can budget it first.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

# Part of an imagefolder run's data fingerprint (trainer.data.imagefolder): bump it whenever
# to_pixels makes other pixels of the same bytes, so no run resumes on changed inputs.
REVISION = 1
# ~50 megapixels: bigger than any phone photo, far below what would exhaust memory.
MAX_PIXELS = 50_000_000
# Shrink by integer factors (DCT scaling, box filter) down to this multiple of the target
# size, then resize once. 3 is what PIL's docs call indistinguishable from a full-size
# resize; measured (bench/serving_agreement.py): mean pixel difference <= 0.2/255 from a
# full decode, at a third of the decode time of a 640x480 JPEG.
REDUCING_GAP = 3.0

# More than 8 bits per sample: PIL's convert("L"/"RGB") would clip them to 0..255.
WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# Modes whose pixels cannot be averaged as they are (palette indices, 1-bit): converted
# before shrinking, at full size (at most 4 bytes per pixel).
UNREDUCIBLE = {"P": "RGB", "PA": "RGBA", "1": "L"}
# The formats named to people (PIL reads a few more, but pictures come in these).
READABLE = "PNG, JPEG, GIF, BMP, TIFF or WebP"
# EXIF orientation -> the transpose that makes the picture upright.
ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}


class ImageError(ValueError):
    """The bytes are not a picture this function can turn into pixels (a client error).

    ``str()`` is said to whoever sent the picture (the app's users); ``reason`` only says
    what is wrong with it (what an ingest says of a file in a folder it was given)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class ImageTooLarge(ImageError):
    """More pixels than allowed: a decompression bomb or an absurdly large picture."""


@dataclass(frozen=True)
class Probe:
    """What the header says, and what decoding will cost."""

    format: str | None
    mode: str
    width: int
    height: int
    decode_bytes: int  # peak bytes of pixel buffers while decoding (an upper estimate)


def probe(data: bytes, shape: Sequence[int], max_pixels: int = MAX_PIXELS,
          draft: bool = True) -> Probe:
    """Header only: size, mode and the decode's memory cost; raises like :func:`to_pixels`."""
    with _open(data, max_pixels) as image:
        full = (image.width, image.height)
        if draft:
            _draft(image, _target(shape))
        return Probe(image.format, image.mode, *full, _decode_bytes(image))


def to_pixels(data: bytes, shape: Sequence[int], max_pixels: int = MAX_PIXELS,
              draft: bool = True) -> np.ndarray:
    """Image file bytes -> ``uint8`` pixels of ``shape`` = ``(C, H, W)``, C being 1 or 3.

    Raises :class:`ImageError` (:class:`ImageTooLarge` for too many pixels) naming what
    is wrong; never anything else for bad bytes.
    """
    channels, height, width = _check_shape(shape)
    with _open(data, max_pixels) as image:
        if draft:
            _draft(image, (width, height))
        try:
            image.load()
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            small = _reduce(image, (width, height), orientation)
            if (method := ORIENTATION.get(orientation)) is not None:
                small = small.transpose(method)
            small = convert_mode(small, channels)
            if small.size != (width, height):
                small = small.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(small, dtype=np.uint8).reshape(height, width, channels)
        except ImageError:
            raise
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(f"image rejected as a decompression bomb: {e}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt
            raise ImageError(f"the image is corrupt or truncated: {e}") from None
        except Exception as e:  # noqa: BLE001  a decoder bug on hostile bytes is bad input too
            raise ImageError(f"the image could not be decoded: {type(e).__name__}: {e}") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 1:
        raise ValueError(f"shape must be (C, H, W) with C 1 or 3, got {tuple(shape)}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _target(shape: Sequence[int]) -> tuple[int, int]:
    """(width, height) the picture is shrunk towards."""
    _, height, width = _check_shape(shape)
    return width, height


class _open:
    """``with _open(data, max_pixels) as image``: a lazily decoded image, size checked."""

    def __init__(self, data: bytes, max_pixels: int):
        self.data, self.max_pixels = data, max_pixels
        self.image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        if not self.data:
            raise ImageError("the file is empty (0 bytes)")
        try:
            with warnings.catch_warnings():
                # PIL only warns below 2x its own limit; the check below is the real guard.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self.image = Image.open(io.BytesIO(self.data))
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(f"image rejected as a decompression bomb: {e}") from None
        except UnidentifiedImageError:
            raise ImageError(f"not an image format we can read (send a {READABLE})",
                             f"not in a format the trainer reads ({READABLE})") from None
        except Exception as e:  # noqa: BLE001  a decoder bug on a hostile header is bad input too
            raise ImageError(f"the image could not be decoded: {type(e).__name__}: {e}") from None
        width, height = self.image.size
        if width * height > self.max_pixels:
            self.image.close()
            raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; "
                                f"the limit is {self.max_pixels} pixels")
        if width < 1 or height < 1:
            self.image.close()
            raise ImageError(f"image has no pixels ({width}x{height})")
        return self.image

    def __exit__(self, *exc: object) -> None:
        if self.image is not None:
            self.image.close()


def _draft(image: Image.Image, target: tuple[int, int]) -> None:
    """Ask the decoder for a reduced size still >= gap x target (JPEG: 1/2, 1/4 or 1/8 by
    DCT scaling; formats without a reduced decode ignore it).

    Either orientation: the EXIF tag is not read yet, so both sides must stay large enough.
    """
    side = math.ceil(max(target) * REDUCING_GAP)
    image.draft(None, (side, side))


def _bytes_per_pixel(mode: str) -> int:
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4  # PIL keeps every other mode (LA and RGB too) in 32 bits per pixel


def _decode_bytes(image: Image.Image) -> int:
    """The decoded buffer plus one full-size 32-bit working copy where shrinking needs it
    (palette/1-bit converted first, alpha premultiplied); the small results are extra."""
    pixels = image.width * image.height
    copy = image.mode in UNREDUCIBLE or image.mode in ("RGBA", "LA", "PA")
    return pixels * (_bytes_per_pixel(image.mode) + (4 if copy else 0))


def _reduce(image: Image.Image, target: tuple[int, int], orientation: int) -> Image.Image:
    """Shrink by an integer factor while the picture stays >= gap x target (box filter)."""
    width, height = target
    if orientation in (5, 6, 7, 8):  # a quarter turn: the stored picture is on its side
        width, height = height, width
    factor = int(min(image.width / (width * REDUCING_GAP), image.height / (height * REDUCING_GAP)))
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode in UNREDUCIBLE:
        image = image.convert(UNREDUCIBLE[mode])
    if factor < 2:
        return image
    if image.mode.startswith("I;16"):  # PIL's reduce() lacks these modes; a box resize is the same
        size = (math.ceil(image.width / factor), math.ceil(image.height / factor))
        return image.resize(size, Image.Resampling.BOX)
    return image.reduce(factor)


def to_8bit(image: Image.Image) -> Image.Image:
    """A single-channel 16-bit/32-bit/float image as mode "L", scaled by its value range.

    The type's range where the values fit it (16-bit: 0..65535, float: 0..1), so a dark
    picture stays dark; otherwise (e.g. raw 32-bit sensor counts) the image's own range.
    Only ever called on the already shrunk picture.
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not np.isfinite([low, high]).all():
        raise ImageError(f"the {image.mode} image holds non-finite values (NaN or infinity)")
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    elif image.mode != "F" and low >= 0 and high <= 65535:
        low, high = 0.0, 65535.0
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.clip((values - low) * scale, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" (1 channel) or "RGB" (3), transparency composited onto white."""
    target = "L" if channels == 1 else "RGB"
    mode = image.mode
    try:
        if mode in WIDE_MODES:
            image = to_8bit(image)
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                image.mode == "P" and "transparency" in image.info):
            # Transparent parts become white, as they look on a page, not black.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        try:
            return image.convert(target)
        except ValueError:
            # PIL lacks some direct conversions (LAB -> L) but has the one via RGB.
            return image.convert("RGB").convert(target)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001  whatever PIL refuses is the file's fault
        reason = f"unsupported image mode {mode}: {type(e).__name__}: {e}"
        raise ImageError(f"{reason}; send an RGB or grayscale PNG/JPEG", reason) from None
