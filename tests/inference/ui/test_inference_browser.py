"""The UI in a real browser: Playwright driving Debian's Chromium (never `playwright install`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.inference.inference_helpers import V1, serve_app
from tests.inference.modelkit import publish_version, write_progress

CHROMIUM = Path("/usr/bin/chromium")
# Fresh copies for a look after each run (git-ignored); the README's screenshots come from
# docs/screenshots.py, which trains on real CIFAR-10 images.
SHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's Chromium is missing at /usr/bin/chromium "
                              "(`make chromium` installs it)"),
]


def red_picture(path: Path) -> Path:
    """A mostly red picture with some detail, so the screenshot shows a real upload."""
    image = Image.new("RGB", (320, 240), (215, 38, 45))
    draw = ImageDraw.Draw(image)
    draw.ellipse((90, 50, 230, 190), fill=(250, 90, 80))
    draw.rectangle((20, 200, 300, 225), fill=(160, 20, 30))
    image.save(path)
    return path


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def test_ui_from_empty_store_to_prediction(local_store, tmp_path, browser_page):
    page = browser_page
    local_store.ensure_buckets()
    with serve_app(local_store.url, tmp_path / "cache") as (base, _):
        page.goto(base + "/")
        page.get_by_text("No model published yet").wait_for()
        page.screenshot(path=str(tmp_path / "no-model.png"))

        # The page switches to the classifier by itself once a model is published.
        publish_version(local_store, V1)
        page.locator("#model-status").get_by_text(V1).wait_for()

        page.locator("input[type=file]").first.set_input_files(str(red_picture(tmp_path / "r.png")))
        page.locator("#prediction").get_by_text("red").first.wait_for()
        page.locator("#answered-by").get_by_text(V1).wait_for()
        shot = tmp_path / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(shot, SHOTS / "test-predict.png")

        page.get_by_role("tab", name="Training").click()
        curves = page.locator("#curves img")
        curves.wait_for(state="visible")
        assert curves.evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(tmp_path / "training.png"), full_page=True)
        shutil.copy(tmp_path / "training.png", SHOTS / "test-training.png")

        page.get_by_role("tab", name="Models").click()
        page.get_by_role("tab", name="Models").wait_for()
        page.get_by_text(V1).last.wait_for()
        page.screenshot(path=str(tmp_path / "models.png"), full_page=True)


def test_ui_shows_runs_in_progress_and_links_versions_to_mlflow(local_store, tmp_path,
                                                                 browser_page):
    """Issue 13: a first run is visible while it trains (no model yet, no MLflow needed);
    later the Training tab shows the next run in progress, and the Models tab links each
    version to its MLflow run on the address users open MLflow at."""
    page = browser_page
    mlflow_ui = "http://mlflow.example.test:5000"
    with serve_app(local_store.url, tmp_path / "cache", mlflow_ui_url=mlflow_ui) as (base, app):
        app.state.progress.refresh_seconds = 0
        page.goto(base + "/")
        page.get_by_text("No model published yet").wait_for()
        write_progress(local_store, "firstrun", epoch=2, epochs=5)  # no MLflow at all
        first = page.locator("#progress-first-run")
        first.get_by_text("epoch 2 of 5").wait_for()
        # The curves so far are drawn (the plot renders after the text: wait, don't count).
        first.locator(".curves-so-far img").first.wait_for()
        page.screenshot(path=str(tmp_path / "first-run.png"), full_page=True)

        version = publish_version(local_store, f"{V1}-firstrun", run_id="firstrun")
        write_progress(local_store, "firstrun", epoch=5, state="published", version=version,
                       mlflow=("7", "abc123def456"))
        write_progress(local_store, "nextrun", epoch=1, epochs=5, mlflow=("7", "fedcba987"))
        page.locator("#model-status").get_by_text(version).wait_for()
        page.get_by_role("tab", name="Training").click()
        running = page.locator("#progress-training")
        running.get_by_text("epoch 1 of 5").wait_for()
        assert running.get_by_role("link", name="MLflow run").get_attribute("href") == \
            f"{mlflow_ui}/#/experiments/7/runs/fedcba987"
        page.screenshot(path=str(tmp_path / "training-now.png"), full_page=True)
        shutil.copy(tmp_path / "training-now.png", SHOTS / "test-training-now.png")

        page.get_by_role("tab", name="Models").click()
        link = page.locator("#versions").get_by_role("link", name="MLflow run")
        link.wait_for()
        assert link.get_attribute("href") == f"{mlflow_ui}/#/experiments/7/runs/abc123def456"
