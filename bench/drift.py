"""Drift monitoring: false alarms, windows to detect three shifts, and its cost on /predict.

Trains a model into a temp store with the trainer's own CLI (digits and smallcnn by default,
offline; ``--data`` a CIFAR-10 archive such as the 10% sample trains fastcifar on it), so
the published version carries its monitoring reference. Then:

1. The statistics, in this process, exactly as the app computes them (the version
   downloaded and run by the app's Runner, each answer handed to the app's Recorder, each
   window checked by the app's check): ``--windows`` windows of 256 in-distribution
   predictions (test-split images drawn with replacement) give the false-alarm rate; then,
   per shift, windows until the first alarm (at most 10): brightness (x0.4), noise
   (+ Gaussian noise, sigma 40 of 255) and another dataset's images (scikit-learn's
   digits for a CIFAR-10 model; for the digits model, the trainer's synthetic images,
   uniform random pixels).
2. The cost on POST /predict: two ``python -m inference serve`` on the same store, one with
   ``--monitor off``; rounds of 16 concurrent clients alternate between them (so drift in
   the VM's speed hits both alike); overhead = 1 - (req/s monitored / req/s not).

Last line::

    false_alarm_rate=<x> detect_windows_brightness=<n> detect_windows_noise=<n>
    detect_windows_other=<n> predict_overhead=<x>

(targets: false alarms <= 0.05 over >= 50 windows, each shift within 2 windows, overhead
<= 0.03).
"""

from __future__ import annotations

import argparse
import io
import logging
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from inference_latency import Tally, multipart, run_clients, start_server
from PIL import Image

from inference.monitoring.traffic import other_dataset, shifted

log = logging.getLogger("bench.drift")
SHIFTS = {"brightness": "dark", "noise": "noise"}  # the shifts of `make demo-traffic`
WINDOW = 256
MAX_WINDOWS_TO_DETECT = 10


def train(store: Path, data: str | None) -> tuple[str, str]:
    """Publish a model with the trainer's CLI; returns (model name, dataset)."""
    python = [sys.executable, "-m", "trainer"]
    subprocess.run([*python, "buckets", "--store", str(store)], check=True)
    if data:
        subprocess.run([*python, "ingest", "--store", str(store), "--dataset", "cifar10",
                        "--source", data], check=True)
        model, dataset, args = "fastcifar", "cifar10", ["--epochs", "8", "--batch-size", "64",
                                                         "--lr", "0.2"]
    else:
        model, dataset, args = "smallcnn", "digits", ["--epochs", "8", "--batch-size", "64"]
    subprocess.run([*python, "train", "--store", str(store), "--dataset", dataset, "--model",
                    model, *args], check=True)
    return f"{model}-{dataset}", dataset


class Windows:
    """The app's Recorder fed by the app's Runner: closed windows collected in order."""

    def __init__(self, version):
        from inference.monitoring.recorder import Recorder
        from inference.serving.runner import Runner

        self.version, self.runner = version, Runner(version, "fp32", "eager")
        self.closed: list = []
        self._done = threading.Condition()
        self.recorder = Recorder(self._on_window, window_size=WINDOW, window_seconds=1e9,
                                 inbox_limit=1 << 16)

    def _on_window(self, version, window) -> None:
        with self._done:
            self.closed.append(window)
            self._done.notify_all()

    def predict(self, images: np.ndarray) -> list:
        """Run ``images`` (uint8 N x C x H x W, a multiple of WINDOW) and return their windows."""
        before = len(self.closed)
        for start in range(0, len(images), 64):
            batch = list(images[start:start + 64])
            for pixels, probabilities in zip(batch, self.runner(batch)):
                self.recorder(self.version, pixels, probabilities)
        with self._done:
            self._done.wait_for(lambda: len(self.closed) >= before + len(images) // WINDOW, 600)
        return self.closed[before:]


def statistics(store: Path, name: str, dataset: str, windows: int, seed: int) -> dict:
    from inference.monitoring.drift import check
    from inference.published.versions import download_version
    from trainer.data.loading import load_dataset
    from trainer.store import LocalStore

    local = LocalStore(store)
    version = download_version(local, name, _latest(local, name), Path(tempfile.mkdtemp()))
    feed = Windows(version)
    reference = feed.recorder.reference(version)
    test = load_dataset(dataset, local, image_size=version.meta.input_size[-1],
                        seed=0).test.images.numpy()
    rng = np.random.default_rng(seed)

    def verdicts(images: np.ndarray) -> list[bool]:
        return [check(reference, [w], model=name, version=version.version).drift
                for w in feed.predict(images)]

    draws = test[rng.integers(0, len(test), windows * WINDOW)]
    alarms = verdicts(draws)
    found = {"false_alarm_rate": sum(alarms) / len(alarms)}
    shape = tuple(version.meta.input_size)
    for kind in ("brightness", "noise", "other"):
        found[f"detect_windows_{kind}"] = MAX_WINDOWS_TO_DETECT + 1  # not within the limit
        for n in range(1, MAX_WINDOWS_TO_DETECT + 1):
            base = test[rng.integers(0, len(test), WINDOW)]
            images = (other_dataset(WINDOW, shape, dataset, seed + n) if kind == "other"
                      else shifted(base, SHIFTS[kind], rng))
            if verdicts(images)[0]:
                found[f"detect_windows_{kind}"] = n
                break
        log.info("%s: detected in window %s", kind, found[f"detect_windows_{kind}"])
    feed.recorder.stop()
    return found


def _latest(store, name: str) -> str:
    from inference.monitoring.records import served_version

    return served_version(store, name)


def overhead(store: Path, name: str, dataset: str, rounds: int, seconds: float) -> float:
    from trainer.data.loading import load_dataset
    from trainer.store import LocalStore

    image = load_dataset(dataset, LocalStore(store), image_size=32, seed=0).test.images[0]
    buffer = io.BytesIO()
    array = image.numpy().transpose(1, 2, 0)
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, "PNG")
    body = multipart(buffer.getvalue())
    tallies = {"on": Tally(), "off": Tally()}
    servers = {mode: start_server(str(store), name, ["--monitor", mode, "--poll-seconds", "60"])
               for mode in tallies}
    try:
        for _ in range(rounds):
            for mode, (_, base) in servers.items():
                tallies[mode].add(run_clients(base, body, 16, seconds=seconds))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    for mode, tally in tallies.items():
        log.info("%s", tally.line(f"monitor {mode}"))
    return 1 - tallies["on"].rps / tallies["off"].rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a CIFAR-10 archive (e.g. ../shared/data/cifar10-sample/"
                                       "cifar-10-python.tar.gz) [digits, offline]")
    parser.add_argument("--windows", type=int, default=50, help="in-distribution windows [50]")
    parser.add_argument("--rounds", type=int, default=4, help="overhead rounds per server [4]")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per round [4]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="10 windows, 1 round of 2 s (a smoke run, not the figures)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.quick:
        args.windows, args.rounds, args.seconds = 10, 1, 2.0
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        store = Path(tmp) / "store"
        name, dataset = train(store, args.data)
        found = statistics(store, name, dataset, args.windows, args.seed)
        found["predict_overhead"] = overhead(store, name, dataset, args.rounds, args.seconds)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
