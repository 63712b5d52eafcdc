"""Issue 24, in a real browser (Playwright + Debian's Chromium, as test_inference_browser):
the curves so far with a legend after one epoch, an interrupted run, the published curves
free of Gradio's buttons, a named model with nothing yet, the login page's title."""

from __future__ import annotations

import shutil

from tests.inference.inference_helpers import V1, serve_app
from tests.inference.modelkit import MODEL_NAME, publish_version, write_progress
from tests.inference.ui.test_inference_browser import (  # noqa: F401 (a fixture)
    SHOTS,
    browser_page,
    pytestmark,
)

TOKEN = "newcomer-" + "0123456789abcdef" * 2


def test_runs_so_far_and_the_published_curves_are_readable(local_store, tmp_path, request):
    page = request.getfixturevalue("browser_page")
    with serve_app(local_store.url, tmp_path / "cache") as (base, app):
        app.state.progress.refresh_seconds = 0
        write_progress(local_store, "onepoch", epoch=1, epochs=5)
        page.goto(base + "/")
        first = page.locator("#progress-first-run")
        first.get_by_text("epoch 1 of 5").wait_for()
        plots = first.locator(".curves-so-far img")
        plots.nth(1).wait_for()
        assert plots.count() == 2 and plots.nth(0).evaluate("img => img.naturalWidth") > 300
        page.screenshot(path=str(tmp_path / "one-epoch.png"), full_page=True)
        shutil.copy(tmp_path / "one-epoch.png", SHOTS / "test-one-epoch.png")

        publish_version(local_store, V1)
        write_progress(local_store, "stopped", epoch=2, epochs=5, state="interrupted")
        page.locator("#model-status").get_by_text(V1).wait_for()
        page.get_by_role("tab", name="Training").click()
        running = page.locator("#progress-training")
        running.get_by_text("interrupted").first.wait_for()
        running.get_by_text("to resume from its last checkpoint").wait_for()
        curves = page.locator("#curves")
        curves.locator("img").wait_for(state="visible")
        # Gradio's download/fullscreen/share buttons float over an image's top corner,
        # where the published figure has its titles and legend.
        image_box = curves.locator("img").bounding_box()
        buttons = [b for b in curves.locator("button").all() if not b.locator("img").count()]
        assert buttons  # still there (fullscreen, download), only moved
        for button in buttons:
            box = button.bounding_box()
            assert box["y"] + box["height"] <= image_box["y"], box
        page.screenshot(path=str(tmp_path / "training.png"), full_page=True)
        shutil.copy(tmp_path / "training.png", SHOTS / "test-training-interrupted.png")


def test_a_named_model_with_nothing_yet_says_so_and_the_login_page_has_a_title(
        local_store, tmp_path, request):
    page = request.getfixturevalue("browser_page")
    publish_version(local_store, V1)
    with serve_app(local_store.url, tmp_path / "cache", model_name="smallcnn-digits",
                   auth_token=TOKEN) as (base, _):
        page.goto(base + "/")
        page.locator("input[type=password]").wait_for()
        assert page.title() == "trainstack · sign in"
        page.screenshot(path=str(tmp_path / "login.png"), full_page=True)
        page.locator("input[type=text]").fill("me")
        page.locator("input[type=password]").fill(TOKEN)
        page.get_by_role("button", name="Login").click()
        page.get_by_text("No model published yet as").wait_for()
        page.get_by_text(MODEL_NAME).wait_for()
        assert page.title() == "trainstack · image classifier"
        page.screenshot(path=str(tmp_path / "named.png"), full_page=True)
        shutil.copy(tmp_path / "named.png", SHOTS / "test-named-model-empty.png")
