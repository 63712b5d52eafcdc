"""Monitoring in the running app (uvicorn, real HTTP), on a local store and S3 (moto): what
the app saw is written as windows, each window checked and reported; in-distribution
traffic stays green, a darker camera turns it red; the CLI gives one line; a store that
fails never slows or fails a prediction."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import httpx
import numpy as np
from PIL import Image

from inference.monitoring.records import recent_reports, recent_windows
from tests.inference.inference_helpers import V1, serve_app, wait_for_version, wait_until
from tests.inference.modelkit import MODEL_NAME, colour_images, publish_version
from trainer.contract.errors import StoreError
from trainer.contract.layout import ModelKeys
from trainer.store import LocalStore

WINDOW = 64


def pngs(images: np.ndarray) -> list[bytes]:
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image.transpose(1, 2, 0)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def send(base: str, images: np.ndarray) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        for data in pngs(images):
            r = client.post("/predict", files={"file": ("x.png", data, "image/png")})
            assert r.status_code == 200, r.text


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(2))


def test_the_app_checks_what_it_serves_and_turns_red_on_a_shift(any_store, tmp_path):
    publish_version(any_store, V1, reference=True)
    with serve_app(any_store.url, tmp_path / "cache", monitor_window=WINDOW,
                   monitor_window_s=3600) as (base, app):
        wait_for_version(base, V1)
        send(base, colour_images(2 * WINDOW, seed=11)[0])
        assert app.state.monitor.recorder.flush()
        reports = app.state.monitor.reports(MODEL_NAME, V1)
        assert [r.drift for r in reports] == [False, False]
        assert metric(base, "trainstack_drift_detected") == 0
        send(base, colour_images(2 * WINDOW, seed=12, brightness=0.5)[0])
        assert app.state.monitor.recorder.flush()
        reports = app.state.monitor.reports(MODEL_NAME, V1)
        assert [r.drift for r in reports] == [False, False, True, True]
        assert "brightness" in reports[-1].fired
        assert metric(base, "trainstack_drift_detected") == 1
        assert metric(base, "trainstack_drift_windows_in_a_row") == 2
        assert 0 < metric(base, "trainstack_estimated_accuracy") <= 1
    windows = recent_windows(any_store, MODEL_NAME, V1, 10)
    assert [w.n for w in windows] == [WINDOW] * 4
    stored = recent_reports(any_store, MODEL_NAME, V1, 10)
    assert [r.drift for r in stored] == [False, False, True, True]
    for window in windows:  # never the image: summaries only
        assert set(window.samples) >= {"confidence", "entropy", "brightness"}


def run_monitor(store_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inference", "monitor", "--store", store_url,
                           "--model", MODEL_NAME, *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_monitor_command_prints_one_verdict_and_skips_a_broken_window(local_store,
                                                                         tmp_path):
    publish_version(local_store, V1, reference=True)
    with serve_app(local_store.url, tmp_path / "cache", monitor_window=WINDOW) as (base, app):
        wait_for_version(base, V1)
        send(base, colour_images(WINDOW, seed=21, brightness=0.4)[0])
        assert app.state.monitor.recorder.flush()
    broken = ModelKeys(MODEL_NAME).window(V1, "99999999T999999999999Z-broken")
    local_store.put_bytes(broken, b'{"model": "colournet-colours"')
    done = run_monitor(local_store.url)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"drift=true estimated_accuracy=0\.\d{4} n=64\n", done.stdout)
    assert broken in done.stderr  # skipped, named


def test_the_monitor_command_says_why_it_cannot_check(local_store):
    publish_version(local_store, V1)  # published before references existed
    done = run_monitor(local_store.url)
    assert done.returncode == 1 and done.stdout == ""
    assert "has no monitoring reference" in done.stderr
    publish_version(local_store, "20261125T000000Z", reference=True)
    done = run_monitor(local_store.url)
    assert done.returncode == 1 and "prediction(s) recorded, at least" in done.stderr


class FailingMonitoringWrites(LocalStore):
    """A store whose monitoring writes fail (the store down for them) until ``back``."""

    back = False

    def put_bytes(self, key: str, data: bytes) -> None:
        if "/monitoring/" in key and not self.back:
            raise StoreError(f"store unreachable writing {key}")
        super().put_bytes(key, data)


def test_a_failing_store_costs_no_prediction_and_what_waited_is_written_later(tmp_path):
    store = FailingMonitoringWrites(tmp_path / "store")
    publish_version(store, V1, reference=True)
    from inference.app import Settings, create_app
    from inference.published.registry import Registry

    registry = Registry(store, tmp_path / "cache", None, 0.2)
    settings = Settings(store=store.url, poll_seconds=0.2, torch_threads=1,
                        monitor_window=WINDOW, cache_dir=tmp_path / "cache")
    app = create_app(settings, registry)
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "a model")
        for data in pngs(colour_images(3 * WINDOW, seed=31)[0]):
            assert client.post("/predict", files={"file": ("x.png", data)}).status_code == 200
        assert app.state.monitor.recorder.flush()
        assert len(app.state.monitor.reports(MODEL_NAME, V1)) == 3  # checked all the same
        assert not store.list(ModelKeys(MODEL_NAME).monitoring)
        store.back = True
        for data in pngs(colour_images(WINDOW, seed=32)[0]):
            assert client.post("/predict", files={"file": ("x.png", data)}).status_code == 200
        assert app.state.monitor.recorder.flush()
    assert len(recent_windows(store, MODEL_NAME, V1, 10)) == 4
    assert len(recent_reports(store, MODEL_NAME, V1, 10)) == 4


def test_a_hung_store_fills_the_recorder_which_drops_and_counts_never_waits(tmp_path):
    """The window's store write hangs (as a store that never answers): the recorder's thread
    is stuck in it, the inbox fills, and later predictions are dropped and counted while
    the request path returns at once."""
    import threading
    from types import SimpleNamespace

    from inference.monitoring.recorder import Recorder
    from tests.inference.modelkit import colour_reference

    (tmp_path / "reference.json").write_bytes(colour_reference())
    version = SimpleNamespace(name=MODEL_NAME, version=V1,
                              meta=SimpleNamespace(reference="reference.json"),
                              file=lambda name: tmp_path / name)
    hung = threading.Event()
    recorder = Recorder(lambda version, window: hung.wait(60), window_size=1, inbox_limit=8)
    images = colour_images(40, seed=41)[0]
    requests = threading.Thread(target=lambda: [recorder(version, image, [0.8, 0.1, 0.1])
                                                for image in images])
    try:
        requests.start()
        requests.join(30)  # while the store still hangs
        assert not requests.is_alive(), "a prediction waited for the hung store"
        assert recorder.dropped >= len(images) - 8 - 2  # the inbox, and what was taken out
    finally:
        hung.set()
        recorder.stop()
