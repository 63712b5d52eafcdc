"""Issue 20 #4: credentials in MLFLOW_TRACKING_URI (an external MLflow with basic auth in
the URL) never reach a log line, the progress record or the app's MLflow links."""

from __future__ import annotations

import logging
import re

import pytest

from tests.testkit import free_port
from tests.trainer.tracking_kit import a_run, fresh_state, publish_fake_version, train_epochs
from trainer.contract.layout import ModelKeys
from trainer.contract.reporting.progress import RunProgress, mlflow_run_page
from trainer.contract.urls import display_url, redact_urls
from trainer.tracking.reporting import open_reporter
from trainer.tracking.tracker import MLFLOW_HTTP_DEFAULTS

PASSWORD = "s3cret-Pw-91"
IDLE_S = 180


@pytest.mark.parametrize(("url", "shown"), [
    (f"https://alice:{PASSWORD}@mlflow.example.com/", "https://mlflow.example.com/"),
    (f"http://alice:{PASSWORD}@10.0.0.5:5000/x?token={PASSWORD}#f", "http://10.0.0.5:5000/x#f"),
    (f"http://{PASSWORD}@[::1]:5000", "http://[::1]:5000"),
    (f"https://h/p?X-Amz-Signature={PASSWORD}&a=b", "https://h/p"),
    ("http://mlflow.trainstack.svc:5000", "http://mlflow.trainstack.svc:5000"),
    ("/a/local/path", "/a/local/path"),
])
def test_display_url_drops_userinfo_and_query(url, shown):
    assert display_url(url) == shown


# Issue 28 #9: a password with an unencoded '#', '/' or '?' ends urlsplit's netloc early, so
# the userinfo looked like host and path; and '@' in a password or a path.
UNENCODED = ("p4ss#W0rd-x", "p4ss/W0rd-x", "p4ss?W0rd-x", "p4ss@W0rd-x", "12/34#56")


@pytest.mark.parametrize("password", UNENCODED)
@pytest.mark.parametrize("template", [
    "https://alice:{}@mlflow.example.com/",
    "http://alice:{}@10.0.0.5:5000/api?x=1#f",
    "http://{}@[::1]:5000",
])
def test_a_password_with_unencoded_delimiters_is_never_shown(password, template):
    url = template.format(password)
    shown = display_url(url)
    message = redact_urls(f"request to {url} failed")
    for piece in (*re.split(r"[#/?@]", password), "alice"):
        assert piece not in shown and piece not in message, (url, shown, message)
    assert "mlflow.example.com" in shown or "10.0.0.5:5000" in shown or "[::1]:5000" in shown


def test_an_at_sign_past_the_host_hides_what_precedes_it_and_says_so():
    # 'https://h/p@x' may be a path with an '@' or userinfo 'h/p' (a password with an
    # unencoded '/'): only what follows the last '@' is certain, and the mark says more
    # was there.
    assert display_url("https://h/p?email=a@b.example") == "https://...@b.example"
    assert display_url("https://host/path/x.tar.gz") == "https://host/path/x.tar.gz"


def test_redact_urls_cleans_every_url_in_a_message():
    message = (f"API request to https://alice:{PASSWORD}@h:443/api/2.0/runs/get failed; "
               f"retry http://bob:{PASSWORD}@other/x?sig={PASSWORD} later")
    cleaned = redact_urls(message)
    assert PASSWORD not in cleaned and "alice" not in cleaned
    assert "https://h:443/api/2.0/runs/get" in cleaned and "http://other/x" in cleaned


def test_links_built_on_a_url_with_credentials_carry_none():
    page = mlflow_run_page(f"https://alice:{PASSWORD}@mlflow.example.com", "1", "abc")
    assert page == "https://mlflow.example.com/#/experiments/1/runs/abc"
    # A record stored before this fix still shows a clean link.
    old = RunProgress(run_id="r", model="m", dataset="d", state="training", epoch=0, epochs=2,
                      world_size=1, started_at="t", updated_at="t", mlflow_run_id="abc",
                      mlflow_experiment_id="1",
                      mlflow_url=f"https://alice:{PASSWORD}@h/#/experiments/1/runs/abc")
    assert PASSWORD not in old.mlflow_page() and PASSWORD not in old.mlflow_page(
        f"https://u:{PASSWORD}@h")


def _everything_logged(caplog) -> str:
    return "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


@pytest.mark.parametrize("password", [PASSWORD, "s3cret#Pw/91"])
def test_an_unreachable_server_with_credentials_logs_none(password, local_store, monkeypatch,
                                                           caplog):
    uri = f"http://alice:{password}@127.0.0.1:{free_port()}"
    for key, value in {**MLFLOW_HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                       "MLFLOW_TRACKING_URI": uri,
                       "TRAINSTACK_TRACKING_TIMEOUT_S": str(IDLE_S)}.items():
        monkeypatch.setenv(key, value)
    local_store.ensure_buckets()
    caplog.set_level(logging.DEBUG)
    run = a_run(epochs=2)
    reporter = open_reporter(local_store, run, is_main=True, world_size=1)
    state = fresh_state(run)
    reporter.started(state)
    train_epochs(reporter, state, [1, 2], world_size=1)
    assert reporter.tracker.wait_idle(IDLE_S)
    logged = _everything_logged(caplog)
    assert "failed" in logged  # the warning is there, without the password
    assert "alice:" not in logged
    for piece in re.split(r"[#/]", password):
        assert piece not in logged


def test_a_tracked_run_with_credentials_stores_and_logs_none(mlflow_env, s3_store, monkeypatch,
                                                            caplog):
    server = mlflow_env["MLFLOW_TRACKING_URI"]
    uri = server.replace("http://", f"http://alice:{PASSWORD}@", 1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TRAINSTACK_TRACKING_TIMEOUT_S", str(IDLE_S))
    s3_store.ensure_buckets()
    caplog.set_level(logging.DEBUG)
    run = a_run(epochs=2)
    reporter = open_reporter(s3_store, run, is_main=True, world_size=1)
    state = fresh_state(run)
    reporter.started(state)
    train_epochs(reporter, state, [1, 2], world_size=1)
    version = publish_fake_version(s3_store, run, state.history)
    reporter.published(version)
    assert reporter.tracker.wait_idle(IDLE_S)
    record = RunProgress.from_json(s3_store.get_bytes(
        ModelKeys(run.config.model_name).progress(run.run_id)))
    assert record.mlflow_run_id and record.mlflow_url.startswith(server + "/#/experiments/")
    stored = b"".join(s3_store.get_bytes(k) for k in s3_store.list("models/")
                      if not k.endswith(".pt2"))
    assert PASSWORD.encode() not in stored
    assert PASSWORD not in _everything_logged(caplog)
