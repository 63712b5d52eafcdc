"""Image decoding, preprocessing and the pure ``predict(model, meta, image)``.

Preprocessing follows the published ``meta.json`` (trainer.schema.VersionMeta) exactly
as the trainer defines the input: ``C x H x W`` pixels scaled to [0, 1], then normalized with ``mean``/``std``.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from trainer.schema import VersionMeta

# ~50 megapixels: bigger than any phone photo, far below what would exhaust memory.
DEFAULT_MAX_PIXELS = 50_000_000


class BadImage(ValueError):
    """The upload is not an image we can read (answered with 400/415)."""

    status = 400


class ImageTooLarge(BadImage):
    """Too many pixels: a decompression bomb or an absurdly large picture."""

    status = 413


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes -> a fully loaded, EXIF-upright PIL image, or a ``BadImage`` saying why."""
    if not data:
        raise BadImage("the uploaded file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL only warns below 2x its own limit; our check below is the real guard.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            # The header alone gives the size: refuse before decoding a single pixel.
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"image is {width}x{height} = {width * height} pixels; "
                    f"the limit is {max_pixels} pixels"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image rejected as a decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise BadImage("the uploaded file is not an image format we can read "
                       "(send a PNG, JPEG, GIF, BMP or WebP)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise BadImage(f"the uploaded image is corrupt or truncated: {e}") from None
    except Exception as e:  # noqa: BLE001  a decoder bug on hostile bytes is still bad input
        raise BadImage(f"the uploaded image could not be decoded: "
                       f"{type(e).__name__}: {e}") from None
    return image


# Modes with more than 8 bits per pixel: PIL's convert("L"/"RGB") clips them to 0..255, so a
# 16-bit photo comes out almost all white. They are rescaled to 8 bits first.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_8bit(image: Image.Image) -> Image.Image:
    """A single-channel 16-bit/32-bit/float image as mode "L", scaled by its value range.

    The type's range where the values fit it (16-bit: 0..65535, float: 0..1), so a dark
    picture stays dark; otherwise (e.g. raw 32-bit sensor counts) the image's own range.
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    elif image.mode != "F" and low >= 0 and high <= 65535:
        low, high = 0.0, 65535.0
    elif not np.isfinite([low, high]).all():
        raise BadImage(f"the {image.mode} image holds non-finite values (NaN or infinity)")
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.clip((values - low) * scale, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" (1 channel) or "RGB", or a ``BadImage`` naming the mode."""
    target = "L" if channels == 1 else "RGB"
    mode = image.mode
    try:
        if mode in WIDE_MODES:
            image = to_8bit(image)
        if image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info):
            # Composite transparency onto white rather than letting it turn black.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        try:
            return image.convert(target)
        except ValueError:
            # PIL lacks some direct conversions (LAB -> L) but has the one via RGB.
            return image.convert("RGB").convert(target)
    except BadImage:
        raise
    except Exception as e:  # noqa: BLE001  whatever PIL refuses is the upload's fault
        raise BadImage(f"unsupported image mode {mode}: {type(e).__name__}: {e}; "
                       "send an RGB or grayscale PNG/JPEG") from None


def preprocess(image: Image.Image, meta: VersionMeta) -> torch.Tensor:
    """Any mode/size -> a float32 ``1 x C x H x W`` tensor, normalized like training."""
    channels, height, width = meta.input_size
    image = convert_mode(image, channels)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = pixels.view(height, width, channels).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(meta.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(meta.std, dtype=torch.float32).view(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def predict(model: Any, meta: VersionMeta, image: Image.Image) -> dict[str, Any]:
    """Classify one image: ``{prediction, confidence, probabilities}`` (pure: no I/O)."""
    x = preprocess(image, meta)
    with torch.inference_mode():
        logits = model(x)
    probs = torch.softmax(logits.float(), dim=1)[0].tolist()
    classes = list(meta.classes)
    best = max(range(len(classes)), key=probs.__getitem__)
    return {
        "prediction": classes[best],
        "confidence": probs[best],
        "probabilities": dict(zip(classes, probs)),
    }
