"""Latency and throughput of POST /predict: batched serving against one-at-a-time.

By default it publishes the trainer's CIFAR ResNet-18 (random weights: speed does not
depend on them), exported as the trainer does, into a temp store; ``--store URL``
benchmarks an already published store instead (e.g. a trained model, whose examples let
``--precision auto`` choose bf16). It starts `python -m inference serve` twice, as
subprocesses (the clients here do not share a GIL with the servers):

- the baseline, today's path before this work: ``--batching off --precision fp32
  --decode full --program eager`` with the old thread default, i.e. each request decodes
  every pixel and runs its own fp32 forward pass of the published program, all requests
  in parallel;
- the app as deployed (its defaults: micro-batching, reduced-size decode, precision auto,
  frozen program).

Rounds of 16 concurrent clients alternate between the two, so drift in the VM's speed
hits both alike. A round lasts a fixed time (each client sends requests back to back
until it ends) rather than a fixed count, so no round ends with a tail of a few clients
left; then one client measures the latency a lone user sees. Last, with both
servers stopped, the compute limit: batched forward passes of the served program alone
(same precision, same intra-op threads, batches of 16 uint8 images, normalization
included). Last line::

    p50_ms=... p99_ms=... rps_1=... rps_16=... errors=... baseline_rps_16=...
    speedup_16=... limit_img_s=... rps_16_vs_limit=...

(p50/p99 of the single client on the batched server; rps_16 / baseline_rps_16 over all
rounds.)
"""

from __future__ import annotations

import argparse
import http.client
import io
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

log = logging.getLogger("bench.inference_latency")

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
VERSION = "20260101T000000Z"
BOUNDARY = "trainstack-bench-boundary"


def publish_default_model(store_dir: Path) -> str:
    """The trainer's resnet18 (CIFAR stem, random weights), published as the trainer does."""
    from trainer.contract.layout import METRICS_FILE, MODEL_FILE, model_name
    from trainer.contract.schema import EpochRecord, MetricsSummary, VersionMeta, VersionMetrics
    from trainer.data.cifar import MEAN, STD
    from trainer.models.zoo import build_model
    from trainer.publish.publication import created_at, export_program, write_version
    from trainer.store import LocalStore

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


def multipart(image: bytes) -> bytes:
    """The request body, built once: the clients should cost the CPU as little as possible."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    return head + image + f"\r\n--{BOUNDARY}--\r\n".encode()


def start_server(store: str, model_name: str | None, flags: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "inference", "serve", "--store", store, "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "WARNING", *flags]
    if model_name:
        cmd += ["--model-name", model_name]
    proc = subprocess.Popen(cmd)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz").json().get("status") == "ready":
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("server did not load a model within 300 s")


def run_clients(base: str, body: bytes, clients: int, requests: int = 0,
                seconds: float = 0.0) -> tuple[list[float], int, float]:
    """``clients`` threads POSTing back to back: ``requests`` in all, or each until
    ``seconds`` have passed. Returns (latencies s, errors, wall s)."""
    if bool(seconds) == bool(requests):
        raise ValueError("give requests or seconds, one of them")
    host, port = base.removeprefix("http://").split(":")
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    deadline = time.perf_counter() + seconds

    def one_client(n: int) -> tuple[list[float], int]:
        latencies, errors = [], 0
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        while len(latencies) < n or (seconds and time.perf_counter() < deadline):
            start = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - start)
            errors += response.status != 200
        conn.close()
        return latencies, errors

    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one_client, shares))
    wall = time.perf_counter() - start
    return [x for lat, _ in results for x in lat], sum(e for _, e in results), wall


class Tally:
    """Latencies, errors and wall time of several rounds, pooled."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors, self.wall = 0, 0.0

    def add(self, result: tuple[list[float], int, float]) -> None:
        self.latencies += result[0]
        self.errors += result[1]
        self.wall += result[2]

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    def pct(self, q: int) -> float:
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    def line(self, what: str) -> str:
        return (f"{what}: {len(self.latencies)} requests, p50 {self.pct(50):.1f} ms, "
                f"p99 {self.pct(99):.1f} ms, {self.rps:.1f} req/s, {self.errors} errors")


@dataclass(frozen=True)
class Served:
    """What the batched server says it runs: the limit is measured the same way."""

    model: str
    version: str
    precision: str
    program: str
    threads: int  # intra-op

    @classmethod
    def of(cls, base: str) -> Served:
        ready = httpx.get(f"{base}/readyz").json()
        metrics = httpx.get(f"{base}/metrics").text
        threads = [line.split()[-1] for line in metrics.splitlines()
                   if line.startswith('trainstack_serving_threads{kind="intra_op"}')]
        if not threads:
            raise SystemExit("the server does not report its intra-op threads")
        return cls(ready["model"], ready["version"], one_label(metrics, "precision"),
                   one_label(metrics, "program"), int(float(threads[0])))


def one_label(metrics: str, name: str) -> str:
    """The label of the ``trainstack_model_<name>`` series whose value is 1."""
    prefix = f'trainstack_model_{name}{{{name}="'
    for line in metrics.splitlines():
        if line.startswith(prefix) and line.endswith(" 1.0"):
            return line[len(prefix):].split('"')[0]
    raise SystemExit(f"the server does not report its {name}")


def compute_limit(store: str, served: Served, batch: int, seconds: float = 5.0) -> float:
    """img/s of the served program's batched forward alone (normalization included)."""
    import numpy as np
    import torch

    from inference.published.registry import Registry
    from inference.serving.runner import Runner
    from trainer.store import open_store

    torch.set_num_threads(served.threads)
    registry = Registry(open_store(store), Path(tempfile.mkdtemp()), served.model)
    registry.check_once()
    version = registry.current
    runner = Runner(version, served.precision, served.program)
    items = [np.zeros(version.meta.input_size, np.uint8)] * batch
    for _ in range(3):
        runner(items)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner(items)
        done += batch
    return done / (time.perf_counter() - start)


def parse_args() -> argparse.Namespace:
    from inference.app import default_torch_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="an already published store (default: a temp one)")
    parser.add_argument("--model-name", help="with --store: which <model>-<dataset>")
    parser.add_argument("--requests-1", type=int, default=200)
    parser.add_argument("--seconds-16", type=float, default=4.0,
                        help="length of a 16-client round, per server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-flags", default="",
                        help="extra flags for the batched server, e.g. '--torch-threads 1'")
    parser.add_argument("--baseline-threads", type=int,
                        default=default_torch_threads(batching=False))
    return parser.parse_args()


def main() -> int:
    from trainer.limits.cpus import usable_cpus

    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tmp = tempfile.TemporaryDirectory(prefix="bench-inference-")
    store, name = args.store, args.model_name
    if not store:
        store = str(Path(tmp.name) / "store")
        name = publish_default_model(Path(store))
    body = multipart(photo_jpeg())
    baseline_flags = ["--batching", "off", "--precision", "fp32", "--decode", "full",
                      "--program", "eager",
                      "--torch-threads", str(args.baseline_threads)]
    servers = {"baseline": start_server(store, name, baseline_flags),
               "batched": start_server(store, name, args.serve_flags.split())}
    tallies = {key: {"1": Tally(), "16": Tally()} for key in servers}
    try:
        for _, base in servers.values():
            run_clients(base, body, 16, 64)  # warm-up: lazy initialisation, kernels per size
        for _ in range(args.rounds):
            for key, (_, base) in servers.items():
                tallies[key]["16"].add(run_clients(base, body, 16, seconds=args.seconds_16))
        for key, (_, base) in servers.items():
            tallies[key]["1"].add(run_clients(base, body, 1, args.requests_1))
        batched = Served.of(servers["batched"][1])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    limit = compute_limit(store, batched, 16)
    tmp.cleanup()
    report(args, tallies, batched, limit, usable_cpus())
    return 0


def report(args, tallies, batched: Served, limit: float, cpus: int) -> None:
    base16, bat16, bat1 = tallies["baseline"]["16"], tallies["batched"]["16"], tallies["batched"]["1"]
    log.info("model %s version %s, %d usable CPU(s), image 640x480 JPEG; batched server: "
             "precision %s, %s program, %d intra-op thread(s)%s", batched.model,
             batched.version, cpus, batched.precision, batched.program, batched.threads,
             f", flags {args.serve_flags!r}" if args.serve_flags else "")
    log.info("%s", tallies["baseline"]["1"].line("baseline, 1 client "))
    log.info("%s", base16.line(f"baseline, 16 clients ({args.rounds} rounds)"))
    log.info("%s", bat1.line("batched,  1 client "))
    log.info("%s", bat16.line(f"batched,  16 clients ({args.rounds} rounds)"))
    log.info("compute limit (batches of 16, %s, %s, %d thread(s)): %.1f img/s; served 16 "
             "clients / limit = %.2f", batched.precision, batched.program, batched.threads,
             limit, bat16.rps / limit)
    speedup = bat16.rps / base16.rps
    log.info("targets: 16 clients >= 3x baseline: %.2fx %s; p99 below baseline's: %.0f vs "
             "%.0f ms %s; 1 client p50 <= 12 ms: %.1f ms %s; served/limit >= 0.7: %.2f %s",
             speedup, ok(speedup >= 3), bat16.pct(99), base16.pct(99),
             ok(bat16.pct(99) < base16.pct(99)), bat1.pct(50), ok(bat1.pct(50) <= 12),
             bat16.rps / limit, ok(bat16.rps / limit >= 0.7))
    errors = sum(t.errors for per_mode in tallies.values() for t in per_mode.values())
    print(f"p50_ms={bat1.pct(50):.1f} p99_ms={bat1.pct(99):.1f} rps_1={bat1.rps:.1f} "
          f"rps_16={bat16.rps:.1f} errors={errors} baseline_rps_16={base16.rps:.1f} "
          f"speedup_16={speedup:.2f} limit_img_s={limit:.1f} "
          f"rps_16_vs_limit={bat16.rps / limit:.2f}")


def ok(met: bool) -> str:
    return "(met)" if met else "(NOT met)"


if __name__ == "__main__":
    sys.exit(main())
