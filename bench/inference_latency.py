"""Latency and throughput of POST /predict: one client, then 16 concurrent clients.

By default it publishes the trainer's CIFAR ResNet-18 (random weights: speed does not
depend on them), exported as the trainer does, into a temp store and starts
`python -m inference serve` on it in a subprocess (so the clients here do not share a
GIL with the server). ``--store URL`` benchmarks an already published store instead.
Last line: ``p50_ms=... p99_ms=... rps_1=... rps_16=... errors=...`` (p50/p99 from the
single client, i.e. the latency one user sees).
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

log = logging.getLogger("bench.inference_latency")

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
VERSION = "20260101T000000Z"


def publish_default_model(store_dir: Path) -> str:
    """The trainer's resnet18 (CIFAR stem, random weights), published as the trainer does."""
    from trainer.cifar import MEAN, STD
    from trainer.layout import METRICS_FILE, MODEL_FILE, model_name
    from trainer.models import build_model
    from trainer.publish import created_at, export_program, write_version
    from trainer.schema import EpochRecord, MetricsSummary, VersionMeta, VersionMetrics
    from trainer.storage import LocalStore

    store = LocalStore(store_dir)
    store.ensure_buckets()
    history = [EpochRecord(1, 1.0, 0.5, 1.0, 0.5, 100.0, 1.0)]
    metrics = VersionMetrics(epochs=history, confusion_matrix=[], classes=CIFAR10, world_size=1)
    meta = VersionMeta(model="resnet18", dataset="cifar10", version=VERSION, run_id="bench",
                       classes=CIFAR10, input_size=[3, 32, 32], mean=list(MEAN), std=list(STD),
                       train_config={}, metrics=MetricsSummary.of(history),
                       created_at=created_at(VERSION), files=[MODEL_FILE, METRICS_FILE])
    model = build_model("resnet18", in_channels=3, num_classes=len(CIFAR10))
    write_version(store, meta, {MODEL_FILE: export_program(model, (3, 32, 32)),
                                METRICS_FILE: metrics.to_json()})
    return model_name("resnet18", "cifar10")


def photo_jpeg() -> bytes:
    """A 640x480 JPEG: decoding and resizing are part of what a real request costs."""
    buffer = io.BytesIO()
    Image.effect_noise((640, 480), 40).convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def start_server(store: str, model_name: str | None, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "inference", "serve", "--store", store, "--host", "127.0.0.1",
           "--port", str(port), "--torch-threads", str(threads), "--log-level", "WARNING"]
    if model_name:
        cmd += ["--model-name", model_name]
    proc = subprocess.Popen(cmd)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("server did not load a model within 300 s")


def run_clients(base: str, image: bytes, clients: int, requests: int) -> tuple[list[float], int, float]:
    """``requests`` POSTs spread over ``clients`` threads: (latencies s, errors, wall s)."""
    def one_client(n: int) -> tuple[list[float], int]:
        latencies, errors = [], 0
        with httpx.Client(timeout=120) as client:
            for _ in range(n):
                start = time.perf_counter()
                r = client.post(f"{base}/predict", files={"file": ("photo.jpg", image, "image/jpeg")})
                latencies.append(time.perf_counter() - start)
                errors += r.status_code != 200
        return latencies, errors

    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one_client, shares))
    wall = time.perf_counter() - start
    return [x for lat, _ in results for x in lat], sum(e for _, e in results), wall


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    # The server's own default, so the figures describe the app as deployed.
    from inference.app import default_torch_threads
    from trainer.cpus import usable_cpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="an already published store (default: a temp one)")
    parser.add_argument("--model-name", help="with --store: which <model>-<dataset>")
    parser.add_argument("--requests-1", type=int, default=100)
    parser.add_argument("--requests-16", type=int, default=320)
    parser.add_argument("--torch-threads", type=int, default=default_torch_threads())
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    tmp = tempfile.TemporaryDirectory(prefix="bench-inference-")
    store, name = args.store, args.model_name
    if not store:
        store = str(Path(tmp.name) / "store")
        name = publish_default_model(Path(store))
    proc, base = start_server(store, name, args.torch_threads)
    try:
        image = photo_jpeg()
        run_clients(base, image, 1, 10)  # warm-up: first calls pay for lazy initialisation
        lat1, err1, wall1 = run_clients(base, image, 1, args.requests_1)
        lat16, err16, wall16 = run_clients(base, image, 16, args.requests_16)
        model = httpx.get(f"{base}/readyz").json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        tmp.cleanup()
    ms = lambda s: f"{1000 * s:.1f}"
    log.info("model %s version %s, %d usable CPU(s), torch threads %d, image 640x480 JPEG",
             model["model"], model["version"], usable_cpus(), args.torch_threads)
    log.info("1 client:   %d requests, p50 %s ms, p99 %s ms, %.1f req/s", len(lat1),
             ms(percentile(lat1, 50)), ms(percentile(lat1, 99)), len(lat1) / wall1)
    log.info("16 clients: %d requests, p50 %s ms, p99 %s ms, %.1f req/s", len(lat16),
             ms(percentile(lat16, 50)), ms(percentile(lat16, 99)), len(lat16) / wall16)
    print(f"p50_ms={ms(percentile(lat1, 50))} p99_ms={ms(percentile(lat1, 99))} "
          f"rps_1={len(lat1) / wall1:.1f} rps_16={len(lat16) / wall16:.1f} "
          f"errors={err1 + err16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
