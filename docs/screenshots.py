"""Make the README's screenshots from a model trained on real CIFAR-10 images.

    .venv/bin/python docs/screenshots.py --cifar path/to/cifar-10-python.tar.gz

Runs the same commands a user runs (`python -m trainer buckets|ingest|train`, then
`python -m inference serve`) in a scratch store, uploads one of the published test
examples in Chromium (Playwright, Debian's /usr/bin/chromium) and saves
docs/screenshots/{predict,training,models}.png.
"""

from __future__ import annotations

import argparse
import logging
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


def shoot(base: str, example: Path) -> None:
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
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar", required=True, help="a CIFAR-10 python-version tar.gz")
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--epochs", default="15")
    parser.add_argument("--example-class", default="frog")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        trainer(store, "buckets")
        trainer(store, "ingest", "--dataset", "cifar10", "--source", args.cifar)
        trainer(store, "train", "--dataset", "cifar10", "--model", args.model,
                "--epochs", args.epochs, "--batch-size", "128", "--lr", "0.1")
        examples = sorted(store.glob(f"models/*/versions/*/examples/*-{args.example_class}.png"))
        port = free_port()
        app = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--store", str(store),
                                "--host", "127.0.0.1", "--port", str(port)], cwd=REPO)
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz")
            shoot(f"http://127.0.0.1:{port}", examples[0])
        finally:
            app.terminate()
            app.wait(timeout=30)
    log.info("screenshots written to %s", OUT)


if __name__ == "__main__":
    main()
