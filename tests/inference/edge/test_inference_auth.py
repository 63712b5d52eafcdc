"""Issue 12, app side: TRAINSTACK_AUTH_TOKEN, against the running app over real HTTP."""

from __future__ import annotations

import logging
import subprocess
import sys

import httpx
import pytest

from tests.inference.inference_helpers import V1, serve_app, wait_for_version
from tests.inference.modelkit import png, publish_version, solid

TOKEN = "tok-" + "0123456789abcdef" * 2  # 36 visible ASCII characters, as the stack requires
RED = png(solid("red"))


def predict(base: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/predict", files={"file": ("red.png", RED, "image/png")},
                      headers=headers, timeout=60)


@pytest.fixture
def guarded_app(local_store, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    publish_version(local_store, V1)
    with serve_app(local_store.url, tmp_path / "cache", auth_token=TOKEN) as (base, app):
        wait_for_version(base, V1)  # /readyz needs no token: the kubelet's probe has none
        yield base, app


def test_the_api_requires_the_bearer_token(guarded_app):
    base, _ = guarded_app
    for response in (predict(base), httpx.get(f"{base}/metrics"),
                     httpx.get(f"{base}/openapi.json"), httpx.get(f"{base}/docs"),
                     predict(base, Authorization=f"Bearer {TOKEN[:-1]}x"),
                     predict(base, Authorization=f"Basic {TOKEN}"),
                     predict(base, Authorization=f"Bearer {TOKEN}extra")):
        assert response.status_code == 401, (response.request.url, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()
        assert body["error"] == "unauthorized"
        assert ("Authorization: Bearer" in body["detail"]
                or "not this app's access token" in body["detail"]), body
    ok = predict(base, Authorization=f"Bearer {TOKEN}")
    assert ok.status_code == 200 and ok.json()["prediction"] == "red"
    assert predict(base, Authorization=f"bearer  {TOKEN}").status_code == 200  # scheme: any case
    metrics = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metrics.status_code == 200 and "trainstack_http_requests_total" in metrics.text
    assert 'endpoint="/predict",status="401"' in metrics.text  # refusals are counted


def test_probes_stay_open(guarded_app):
    base, _ = guarded_app
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["version"] == V1


def test_the_ui_asks_for_a_login_and_the_token_is_the_password(guarded_app):
    base, app = guarded_app
    example = next(iter(app.state.registry.current.examples))
    with httpx.Client(base_url=base, timeout=60) as anonymous:
        assert anonymous.get("/config").status_code == 401
        assert anonymous.get("/gradio_api/info").status_code == 401
        assert anonymous.get(f"/gradio_api/file={example}").status_code in (401, 403)
        join = anonymous.post("/gradio_api/queue/join", json={
            "data": [], "fn_index": 0, "session_hash": "x", "event_data": None})
        assert join.status_code == 401
        assert anonymous.post("/login", data={"username": "me", "password": TOKEN[:-1]}) \
            .status_code == 400
    with httpx.Client(base_url=base, timeout=60) as user:
        login = user.post("/login", data={"username": "anyone", "password": TOKEN})
        assert login.status_code == 200 and login.json() == {"success": True}
        assert user.get("/config").status_code == 200
        assert user.get(f"/gradio_api/file={example}").status_code == 200


def test_the_token_is_never_logged_nor_shown(guarded_app, caplog):
    base, app = guarded_app
    predict(base, Authorization=f"Bearer {TOKEN}")
    predict(base, Authorization=f"Bearer {TOKEN}x")
    httpx.post(f"{base}/login", data={"username": "u", "password": TOKEN + "x"})
    assert caplog.records, "nothing captured: the check below would prove nothing"
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
    assert TOKEN not in repr(app.state.settings)
    assert TOKEN not in repr(app.user_middleware)


def test_without_a_token_nothing_is_asked(local_store, tmp_path):
    publish_version(local_store, V1)
    with serve_app(local_store.url, tmp_path / "cache", auth_token="") as (base, app):
        wait_for_version(base, V1)
        assert predict(base).status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 200
        assert httpx.get(f"{base}/config").status_code == 200
        assert app.state.access_control is False


@pytest.mark.parametrize("bad, what", [(TOKEN + "\n", "whitespace"),
                                       ("tök" + TOKEN, "non-ASCII"),
                                       # Issue 24: the stack's rule, not a laxer local one.
                                       (TOKEN[:31], "at least 32")])
def test_a_token_that_cannot_be_sent_is_refused_at_start_without_echoing_it(
        local_store, tmp_path, bad, what):
    env = {"TRAINSTACK_AUTH_TOKEN": bad, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "inference", "serve", "--store",
                             str(local_store.root), "--port", "0"], check=False, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "TRAINSTACK_AUTH_TOKEN" in result.stderr and what in result.stderr
    assert TOKEN not in result.stderr + result.stdout
