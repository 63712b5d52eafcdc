"""Issue 9 #6: a memory budget per request. The server runs as its own process so its
peak resident memory (VmHWM) is the server's alone."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.inference.inference_helpers import V1, free_port, wait_until
from tests.inference.modelkit import MODEL_NAME, png, publish_version, solid

MIB = 2**20
SIDE = 7000  # 49 megapixels of 16-bit grey: 98 MB decoded, from a ~110 kB PNG


@pytest.fixture(scope="module")
def wide_png(tmp_path_factory) -> bytes:
    """The review's hostile upload: tiny file, huge 16-bit picture."""
    values = np.zeros((SIDE, SIDE), np.uint16)
    values[::7, ::5] = 60000
    path = tmp_path_factory.mktemp("png") / "wide.png"
    Image.fromarray(values).save(path)
    data = path.read_bytes()
    assert len(data) < 1_000_000
    return data


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@contextlib.contextmanager
def server(store_url: str, tmp_path: Path, *flags: str):
    port = free_port()
    cmd = [sys.executable, "-m", "inference", "serve", "--store", store_url, "--host",
           "127.0.0.1", "--port", str(port), "--model-name", MODEL_NAME, "--poll-seconds",
           "60", "--torch-threads", "1", *flags]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{base}/readyz").json().get("version") == V1
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, "the server to load the model", every=0.3)
        for colour in ("red", "green"):  # warm: lazy imports and first-call allocations
            assert post(base, png(solid(colour))).status_code == 200
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def post(base: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base}/predict", files={"file": ("x.png", data, "image/png")},
                      timeout=120)


def test_a_16_bit_bomb_costs_about_its_decoded_size(local_store, tmp_path, wide_png):
    """The review measured 1.19 GiB for this one request (float64 full-size copies)."""
    publish_version(local_store, V1)
    with server(local_store.url, tmp_path) as (base, pid):
        before = peak_rss(pid)
        r = post(base, wide_png)
        assert r.status_code == 200, r.text
        grown = peak_rss(pid) - before
    decoded = SIDE * SIDE * 2
    assert grown < 2 * decoded, f"peak grew by {grown / MIB:.0f} MiB for one request"


def test_concurrent_decodes_share_one_memory_budget(local_store, tmp_path, wide_png):
    """Four at once with room for one: they take turns instead of adding up."""
    publish_version(local_store, V1)
    budget_mb = 120
    with server(local_store.url, tmp_path, "--decode-memory-mb", str(budget_mb),
                "--decode-threads", "4") as (base, pid):
        before = peak_rss(pid)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post(base, wide_png), range(4)))
        assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
        grown = peak_rss(pid) - before
        metrics = httpx.get(f"{base}/metrics").text
    assert grown < 1.6 * budget_mb * MIB, f"peak grew by {grown / MIB:.0f} MiB"
    assert "trainstack_decode_memory_budget_bytes" in metrics


def test_a_decode_bigger_than_the_whole_budget_is_413(local_store, tmp_path, wide_png):
    publish_version(local_store, V1)
    with server(local_store.url, tmp_path, "--decode-memory-mb", "50") as (base, _):
        r = post(base, wide_png)
        assert r.status_code == 413, r.text
        assert "budget" in r.json()["detail"]
        assert post(base, png(solid("blue"))).json()["prediction"] == "blue"
