"""The Monitoring tab in a real browser (Playwright + Debian's Chromium): green while the
app is asked what it was trained on, red with the fired tests named once a darker camera
sends its pictures, and its figures drawn."""

from __future__ import annotations

import shutil

from tests.inference.inference_helpers import V1, serve_app, wait_for_version
from tests.inference.modelkit import colour_images, publish_version
from tests.inference.monitoring.test_monitoring_app import send
from tests.inference.ui.test_inference_browser import (  # noqa: F401 (a fixture)
    SHOTS,
    browser_page,
    pytestmark,
)

WINDOW = 48


def test_the_monitoring_tab_turns_from_green_to_red(local_store, tmp_path, request):
    page = request.getfixturevalue("browser_page")
    publish_version(local_store, V1, reference=True)
    with serve_app(local_store.url, tmp_path / "cache", monitor_window=WINDOW) as (base, app):
        wait_for_version(base, V1)
        page.goto(base + "/")
        page.get_by_role("tab", name="Monitoring").click()
        page.get_by_text("No check yet").wait_for()
        send(base, colour_images(WINDOW, seed=51)[0])
        assert app.state.monitor.recorder.flush()
        page.get_by_text("No drift in the last check").wait_for()
        assert page.locator("#drift-checks").get_by_text("no drift").count() >= 1
        send(base, colour_images(2 * WINDOW, seed=52, brightness=0.45)[0])
        assert app.state.monitor.recorder.flush()
        verdict = page.locator("#drift-verdict")
        verdict.get_by_text("Drift in the last 2 check(s)").wait_for()
        assert "brightness" in verdict.inner_text()
        for plot in ("#estimated-accuracy", "#class-distribution", "#confidence-histogram"):
            page.locator(f"{plot} img").wait_for(state="visible")
        page.screenshot(path=str(tmp_path / "monitoring.png"), full_page=True)
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "monitoring.png", SHOTS / "test-monitoring.png")
