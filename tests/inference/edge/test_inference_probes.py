"""Issue 20 #5: the open probes tell "up" and the served version, nothing about the store."""

from __future__ import annotations

import httpx

from tests.inference.inference_helpers import free_port, serve_app, wait_until


def _says_nothing_about(body: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in body, (secret, body)


def test_readyz_does_not_tell_the_store_address_or_its_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "probe-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "probe-test-secret")
    port = free_port()  # nothing listens there: every store call fails
    with serve_app(f"s3://127.0.0.1:{port}", tmp_path / "cache") as (base, app):
        app.state.registry.store.RETRIES = 1
        wait_until(lambda: app.state.registry.last_error, "the poller to fail")
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "model": None, "version": None}
        _says_nothing_about(ready.text, str(port), "127.0.0.1", "s3://",
                            app.state.registry.last_error)
        predict = httpx.post(f"{base}/predict", files={"file": ("x.png", b"x", "image/png")})
        assert predict.status_code == 503  # /predict is open without a token too
        _says_nothing_about(predict.text, str(port), "127.0.0.1", "s3://")


def test_the_waiting_page_probe_says_waiting_only(local_store, tmp_path):
    local_store.ensure_buckets()
    with serve_app(local_store.url, tmp_path / "cache") as (base, _app):
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, "readiness")
        ready = httpx.get(f"{base}/readyz")
        assert ready.json() == {"status": "waiting", "model": None, "version": None}
        _says_nothing_about(ready.text, str(local_store.root))
