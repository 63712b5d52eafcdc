"""Make the docs' screenshots from a model trained on real CIFAR-10 images, as
`make demo DATASET=cifar10 CIFAR10_SOURCE=...` trains it.

    .venv/bin/python docs/screenshots.py --cifar path/to/cifar-10-python.tar.gz

Runs the same commands a user runs (`python -m trainer buckets|ingest`, the demo's two DDP
processes through `python -m trainer.launch`, then `python -m inference serve` and
`make demo-traffic`'s `python -m inference traffic`) in a scratch store, uploads one of the
published test examples in Chromium (Playwright, Debian's /usr/bin/chromium) and saves
docs/screenshots/{predict,training,models,monitoring}.png.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
log = logging.getLogger("screenshots")


def trainer(store: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "trainer", *args, "--store", str(store)],
                   cwd=REPO, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url) as reply:
                if b'"ready"' in reply.read():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not become ready")


def traffic(base: str, store: Path, shift: str) -> None:
    subprocess.run([sys.executable, "-m", "inference", "traffic", "--url", base, "--store",
                    str(store), "--shift", shift, "--count", "512"], cwd=REPO, check=True)


def shoot(base: str, example: Path, store: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(60_000)
        page.goto(base + "/")
        page.locator("input[type=file]").first.set_input_files(str(example))
        page.locator("#answered-by").wait_for()
        page.wait_for_timeout(1000)  # let the label's bars finish animating
        page.screenshot(path=str(OUT / "predict.png"), full_page=True)
        for tab in ("Training", "Models"):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(OUT / f"{tab.lower()}.png"), full_page=True)
        traffic(base, store, "none")  # what it was trained on: green
        traffic(base, store, "dark")  # a darker camera: red
        page.get_by_role("tab", name="Monitoring").click()
        page.locator("#drift-verdict").get_by_text("Drift in the last").wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "monitoring.png"), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar", required=True, help="a CIFAR-10 python-version tar.gz")
    parser.add_argument("--model", default="fastcifar")
    parser.add_argument("--epochs", default="8")
    parser.add_argument("--example-class", default="frog")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        trainer(store, "buckets")
        trainer(store, "ingest", "--dataset", "cifar10", "--source", args.cifar)
        # make demo DATASET=cifar10's recipe: 2 DDP processes, 32 images each per step.
        subprocess.run([sys.executable, "-m", "trainer.launch", "--standalone",
                        "--nproc_per_node", "2", "-m", "trainer", "train", "--store", str(store),
                        "--dataset", "cifar10", "--model", args.model, "--epochs", args.epochs,
                        "--batch-size", "32", "--lr", "0.2"], cwd=REPO, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        examples = sorted(store.glob(f"models/*/versions/*/examples/*-{args.example_class}.png"))
        port = free_port()
        app = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--store", str(store),
                                "--host", "127.0.0.1", "--port", str(port)], cwd=REPO)
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz")
            shoot(f"http://127.0.0.1:{port}", examples[0], store)
        finally:
            app.terminate()
            app.wait(timeout=30)
    log.info("screenshots written to %s", OUT)


if __name__ == "__main__":
    main()
