"""The REST API against a real store (local and S3 via moto) holding the colour model."""

from __future__ import annotations

import io
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.inference.inference_helpers import V1, serve_app, wait_for_version
from tests.inference.modelkit import CLASSES, png, solid


def post(base: str, data: bytes, name: str = "image.png", field: str = "file",
         mime: str = "image/png") -> httpx.Response:
    return httpx.post(f"{base}/predict", files={field: (name, data, mime)}, timeout=60)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming 10 gigapixels, with a tiny body: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("colour", CLASSES)
def test_predict_recognizes_solid_colours(app_v1, colour):
    base, _ = app_v1
    r = post(base, png(solid(colour)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prediction"] == colour
    assert body["model_version"] == V1
    assert body["confidence"] > 0.9
    assert set(body["probabilities"]) == set(CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_any_mode_and_size_is_converted(app_v1):
    base, _ = app_v1
    rgba = solid("blue", (1200, 900), "RGBA")
    palette = solid("green", (300, 200)).convert("P")
    jpeg = io.BytesIO()
    solid("red", (2000, 1500)).save(jpeg, format="JPEG", quality=90)
    cases = [("blue", png(rgba), "image/png"), ("green", png(palette), "image/png"),
             ("red", jpeg.getvalue(), "image/jpeg")]
    for expected, data, mime in cases:
        r = post(base, data, mime=mime)
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == expected
    # Grayscale decodes fine too; the model (3 channels) sees equal channels.
    gray = post(base, png(Image.new("L", (50, 50), 128)))
    assert gray.status_code == 200 and gray.json()["model_version"] == V1


def test_bad_inputs_get_4xx_with_json(app_v1):
    base, _ = app_v1
    good = png(solid("red"))
    cases = {
        "text file": (post(base, b"hello, I am not an image\n", "notes.txt", mime="text/plain"),
                      400, "not an image"),
        "truncated png": (post(base, good[: len(good) // 2]), 400, "truncated"),
        "zero bytes": (post(base, b""), 400, "empty"),
        "decompression bomb": (post(base, bomb_png()), 413, "pixels"),
        "wrong field": (post(base, good, field="image"), 422, "'file'"),
        "no multipart": (httpx.post(f"{base}/predict", json={"file": "x"}), 415, "multipart"),
    }
    for what, (r, status, words) in cases.items():
        assert r.status_code == status, (what, r.status_code, r.text)
        body = r.json()
        assert words in body["detail"], (what, body)
        assert body["error"], what


def test_upload_over_the_limit_is_413(published_store, tmp_path):
    with serve_app(published_store.url, tmp_path / "cache", max_upload_mb=0.05) as (base, _):
        wait_for_version(base, V1)
        big = io.BytesIO()
        Image.effect_noise((400, 400), 64).convert("RGB").save(big, format="PNG")
        assert len(big.getvalue()) > 50_000
        r = post(base, big.getvalue())
        assert r.status_code == 413, r.text
        assert "limit" in r.json()["detail"]
        assert post(base, png(solid("green"))).json()["prediction"] == "green"


def test_health_ready_and_metrics(app_v1):
    base, _ = app_v1
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").json()["version"] == V1
    for colour in ("red", "red", "blue"):
        assert post(base, png(solid(colour))).status_code == 200
    assert post(base, b"").status_code == 400
    text = httpx.get(f"{base}/metrics").text
    assert f'trainstack_predictions_total{{model_version="{V1}",predicted_class="red",' \
           f'source="api"}} 2.0' in text
    assert 'trainstack_http_requests_total{endpoint="/predict",status="200"} 3.0' in text
    assert 'trainstack_http_requests_total{endpoint="/predict",status="400"} 1.0' in text
    assert 'trainstack_http_request_duration_seconds_count{endpoint="/predict"} 4.0' in text
    assert f'trainstack_model_info{{model="colournet-colours",version="{V1}"}} 1.0' in text
    assert "trainstack_model_loaded 1.0" in text


def test_no_model_yet_predict_is_503_and_the_waiting_page_is_ready(any_store, tmp_path):
    any_store.ensure_buckets()
    with serve_app(any_store.url, tmp_path / "cache") as (base, _app):
        r = post(base, png(solid("red")))
        assert r.status_code == 503
        assert "No model is published yet" in r.json()["detail"]
        assert "make demo" in r.json()["detail"]
        ready = httpx.get(f"{base}/readyz")  # ready: it serves the "no model yet" page
        assert ready.status_code == 200 and ready.json()["status"] == "waiting"
        assert ready.json()["version"] is None
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/").status_code == 200  # the UI page itself
        from gradio_client import Client
        status = Client(base + "/", verbose=False).predict(api_name="/status")
        assert "No model loaded yet" in status
        assert any_store.url not in status and "store" not in status  # no address for anyone


def tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    return buffer.getvalue()


def test_unusual_image_modes_are_predicted_or_refused_with_4xx(app_v1, monkeypatch):
    base, _ = app_v1
    # LAB TIFF: PIL has no direct LAB -> L, only LAB -> RGB; a grey must stay grey-ish.
    lab = post(base, tiff(Image.new("LAB", (40, 40), (60, 128, 128))), "lab.tif", mime="image/tiff")
    assert lab.status_code == 200, lab.text
    # 16-bit grayscale PNG (mode I;16): decoded, rescaled and classified.
    r = post(base, png(Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16))))
    assert r.status_code == 200, r.text
    # A decoder crashing on hostile bytes with an unexpected exception type: still 400.
    import trainer.data.pixels as pixels_module

    def crashing_open(*_args, **_kwargs):
        raise IndexError("list index out of range in some decoder")

    monkeypatch.setattr(pixels_module.Image, "open", crashing_open)
    crash = post(base, png(solid("red")))
    assert crash.status_code == 400, crash.text
    assert "could not be decoded" in crash.json()["detail"]
    assert "IndexError" in crash.json()["detail"]


def test_422_answers_close_the_parsed_form(app_v1, monkeypatch):
    """Spooled uploads of a rejected form are freed at once, not left to the GC."""
    from starlette.datastructures import FormData

    base, _ = app_v1
    closed = []
    original = FormData.close

    async def recording_close(self):
        closed.append(sorted(self.keys()))
        await original(self)

    monkeypatch.setattr(FormData, "close", recording_close)
    r = post(base, png(solid("red")), field="image")
    assert r.status_code == 422
    r = httpx.post(f"{base}/predict", data={"file": "text, not a file"},
                   files={"other": ("a.png", png(solid("red")), "image/png")})
    assert r.status_code == 422 and r.json()["error"] == "file_field_not_a_file"
    assert closed == [["image"], ["file", "other"]]
