"""Issue 9 #3: ONE function turns image bytes into model pixels (trainer/data/pixels.py), and
the app's model input is exactly that function's output, normalized."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from trainer.data.pixels import ImageError, ImageTooLarge, probe, to_pixels


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(size=(640, 480)) -> Image.Image:
    """Smooth content (a phone photo, not noise): left half red, right half blue."""
    x = np.linspace(0, 1, size[0])[None, :, None]
    y = np.linspace(0, 1, size[1])[:, None, None]
    rgb = np.concatenate([255 * (x < 0.5) + 0 * y, 60 + 100 * y + 0 * x,
                          255 * (x >= 0.5) + 0 * y], axis=2)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def exif_rotated_jpeg(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(image, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied():
    """A phone stores a portrait shot on its side with orientation 6 (rotate 90 cw)."""
    upright = photo((480, 640))  # portrait: red left, blue right
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote
    pixels = to_pixels(exif_rotated_jpeg(stored, 6), (3, 32, 32))
    reference = to_pixels(encoded(upright, "JPEG", quality=95), (3, 32, 32))
    assert np.abs(pixels.astype(int) - reference.astype(int)).mean() < 3
    assert pixels[0, :, :8].mean() > 200 and pixels[2, :, :8].mean() < 50  # red on the left


def test_transparency_is_white_not_black():
    clear = Image.new("RGBA", (50, 40), (0, 0, 0, 0))
    half = Image.new("LA", (50, 40), (0, 128))
    palette = Image.new("RGBA", (50, 40), (10, 200, 10, 0)).convert("P")
    palette.info["transparency"] = 0
    assert (to_pixels(encoded(clear, "PNG"), (3, 8, 8)) == 255).all()
    assert to_pixels(encoded(half, "PNG"), (1, 8, 8)).mean() == pytest.approx(127, abs=1)
    assert (to_pixels(encoded(palette, "PNG", transparency=0), (3, 8, 8)) == 255).all()


@pytest.mark.parametrize("values, fmt, expected", [
    (np.full((64, 64), 40000, np.uint16), "PNG", 156),  # 16-bit: 40000/65535 of white
    (np.full((64, 64), 0.25, np.float32), "TIFF", 64),  # float 0..1
    (np.full((64, 64), 1000, np.int32), "TIFF", 4),  # 32-bit holding 16-bit values
])
def test_wide_samples_are_rescaled_not_clipped(values, fmt, expected):
    pixels = to_pixels(encoded(Image.fromarray(values), fmt), (1, 8, 8))
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 8, 8)
    assert pixels.mean() == pytest.approx(expected, abs=1)


def test_a_16_bit_ramp_stays_a_ramp():
    ramp = np.tile(np.linspace(0, 65535, 4000), (3000, 1)).astype(np.uint16)
    pixels = to_pixels(encoded(Image.fromarray(ramp), "PNG"), (1, 16, 16))[0].astype(int)
    assert pixels[:, 0].max() < 20 and pixels[:, -1].min() > 235
    assert (np.diff(pixels, axis=1) >= 0).all()


def test_too_many_pixels_is_refused_before_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("decoded pixels of a picture over the limit")

    data = encoded(Image.new("L", (3000, 2000)), "PNG")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge, match="6000000 pixels"):
        to_pixels(data, (3, 32, 32), max_pixels=5_000_000)
    with pytest.raises(ImageTooLarge):
        probe(data, (3, 32, 32), max_pixels=5_000_000)


def test_jpeg_is_decoded_reduced_and_nothing_full_size_is_converted(monkeypatch):
    converted, resized = [], []
    original_convert, original_resize = Image.Image.convert, Image.Image.resize

    def spy_convert(self, *args, **kwargs):
        converted.append(self.size)
        return original_convert(self, *args, **kwargs)

    def spy_resize(self, size, *args, **kwargs):
        resized.append((self.size, tuple(size)))
        return original_resize(self, size, *args, **kwargs)

    data = encoded(photo((4000, 3000)), "JPEG", quality=90)
    assert probe(data, (3, 32, 32)).decode_bytes <= 500 * 375 * 4  # 1/8 scale DCT decode
    monkeypatch.setattr(Image.Image, "convert", spy_convert)
    monkeypatch.setattr(Image.Image, "resize", spy_resize)
    pixels = to_pixels(data, (3, 32, 32))
    assert pixels.shape == (3, 32, 32)
    assert all(w * h <= 500 * 375 for w, h in converted), converted
    assert len(resized) == 1 and resized[0][1] == (32, 32), resized  # exactly one resize


def test_png_is_reduced_before_its_mode_is_converted(monkeypatch):
    converted = []
    original = Image.Image.convert

    def spy(self, *args, **kwargs):
        converted.append((self.mode, self.size))
        return original(self, *args, **kwargs)

    data = encoded(photo((3000, 2000)).convert("RGBA"), "PNG")
    monkeypatch.setattr(Image.Image, "convert", spy)
    to_pixels(data, (1, 32, 32))
    # Only PIL's own premultiply inside reduce() touches the full size.
    assert all(size[0] * size[1] <= 200 * 200 or mode in ("RGBA", "RGBa")
               for mode, size in converted), converted


def test_result_is_contiguous_uint8_chw_and_bad_bytes_are_image_errors():
    pixels = to_pixels(encoded(photo((300, 200)), "PNG"), (3, 24, 16))
    assert pixels.shape == (3, 24, 16) and pixels.dtype == np.uint8
    assert pixels.flags["C_CONTIGUOUS"]
    good = encoded(photo((300, 200)), "JPEG")
    for bad in (b"", b"not an image", good[: len(good) // 3]):
        with pytest.raises(ImageError):
            to_pixels(bad, (3, 8, 8))
    with pytest.raises(ValueError, match="C 1 or 3"):
        to_pixels(good, (2, 8, 8))


def test_the_app_feeds_the_model_exactly_these_pixels():
    """Same bytes, same pixels: what the app normalizes is to_pixels' output, unchanged."""
    import torch

    from inference.serving.predict import decode, normalize
    from tests.inference.serving.test_inference_units import GREY_META

    samples = [exif_rotated_jpeg(photo((64, 48)), 8),
               encoded(Image.new("RGBA", (30, 30), (200, 0, 0, 100)), "PNG"),
               encoded(Image.fromarray(np.full((20, 20), 30000, np.uint16)), "PNG")]
    for data in samples:
        app_pixels = decode(data, GREY_META)
        assert np.array_equal(app_pixels, to_pixels(data, GREY_META.input_size))
        x = normalize(torch.from_numpy(app_pixels)[None], GREY_META)
        expected = torch.from_numpy(to_pixels(data, (1, 8, 8))).float()[None] / 255
        assert torch.allclose(x, expected, atol=1e-6)  # GREY_META: mean 0, std 1


def test_a_full_decode_decodes_every_pixel_and_agrees_with_the_draft():
    """``draft=False`` is the app's decode before reduced decoding (the benchmark's
    baseline): every pixel of the JPEG decoded, then the same shrink and resize."""
    data = encoded(photo((4000, 3000)), "JPEG", quality=90)
    assert probe(data, (3, 32, 32), draft=False).decode_bytes >= 4000 * 3000 * 3
    assert probe(data, (3, 32, 32)).decode_bytes <= 500 * 375 * 4
    full = to_pixels(data, (3, 32, 32), draft=False).astype(float)
    draft = to_pixels(data, (3, 32, 32)).astype(float)
    assert full.shape == draft.shape == (3, 32, 32)
    assert np.abs(full - draft).mean() < 2.0, np.abs(full - draft).mean()
    lossless = encoded(photo((300, 200)), "PNG")  # nothing to draft: the very same pixels
    assert np.array_equal(to_pixels(lossless, (3, 32, 32), draft=False),
                          to_pixels(lossless, (3, 32, 32)))
