"""Hot reload: new versions swap in under load, broken ones are skipped, outages survived."""

from __future__ import annotations

import logging
import threading

import httpx

from tests.inference.inference_helpers import V1, V2, serve_app, wait_for_version, wait_until
from tests.inference.modelkit import MODEL_NAME, ColourNet, png, publish_version, solid

RED = png(solid("red"))


def hammer(base: str, stop: threading.Event, results: list, seen_new: threading.Event):
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            try:
                r = client.post(f"{base}/predict", files={"file": ("red.png", RED, "image/png")})
                body = r.json()
                results.append((r.status_code, body.get("model_version"), body.get("prediction")))
                if body.get("model_version") == V2:
                    seen_new.set()
            except Exception as e:  # noqa: BLE001  recorded, so the assertion below shows it
                results.append(("exception", repr(e), None))


def test_new_version_swaps_in_while_requests_run(app_v1, published_store):
    """Under load, with batching: every batch is run by one version, no request fails,
    and the app ends on the new version."""
    base, app = app_v1
    batches = []
    app.state.engine.batcher.on_batch.append(batches.append)
    stop, seen = threading.Event(), [threading.Event() for _ in range(4)]
    per_client = [[] for _ in seen]
    threads = [threading.Thread(target=hammer, args=(base, stop, out, s))
               for out, s in zip(per_client, seen)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(len(out) >= 2 for out in per_client), "requests on V1")
        publish_version(published_store, V2, model=ColourNet(scale=3.0), test_acc=0.99)
        wait_for_version(base, V2)
        # Every client must get answers from the new version too, not just /readyz.
        wait_until(lambda: all(s.is_set() for s in seen), "every client to reach V2")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    results = [r for out in per_client for r in out]
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    assert {r[1] for r in results} == {V1, V2}
    assert {r[2] for r in results} == {"red"}
    for out in per_client:  # once a client saw V2, it never got V1 again
        versions = [r[1] for r in out]
        assert V1 not in versions[versions.index(V2):]
    last = httpx.post(f"{base}/predict", files={"file": ("red.png", RED, "image/png")}).json()
    assert last["model_version"] == V2
    assert {b.key.version for b in batches} == {V1, V2}
    assert sum(b.size for b in batches) >= len(results)


def test_broken_versions_are_skipped_once_and_the_old_stays(app_v1, published_store, caplog):
    base, app = app_v1
    registry = app.state.registry
    caplog.set_level(logging.INFO, logger="inference.published.registry")
    broken = {"20261124T000001Z": {"model_bytes": b"this is not a torch.export archive"},
              "20261124T000002Z": {"skip_files": ("curves.png",)}}
    for version, how in broken.items():
        publish_version(published_store, version, **how)
        wait_until(lambda v=version: (MODEL_NAME, v) in registry.rejected, f"{version} rejected")
        r = httpx.post(f"{base}/predict", files={"file": ("red.png", RED, "image/png")})
        assert r.status_code == 200 and r.json()["model_version"] == V1
        assert httpx.get(f"{base}/readyz").json()["version"] == V1
    assert "does not load or run" in registry.rejected[(MODEL_NAME, "20261124T000001Z")]
    assert "curves.png" in registry.rejected[(MODEL_NAME, "20261124T000002Z")]
    # The poller keeps polling, but a rejected version is not downloaded again.
    polls = len([r for r in caplog.records if "loading model" in r.getMessage()])
    wait_until(lambda: registry.check_once() is False, "another poll")
    assert len([r for r in caplog.records if "loading model" in r.getMessage()]) == polls
    skipped = [r for r in caplog.records if "skipping broken version" in r.getMessage()]
    assert len(skipped) == 2
    # A good version after broken ones is picked up.
    publish_version(published_store, V2)
    wait_for_version(base, V2)


def test_store_outage_is_survived(tmp_path, monkeypatch):
    """An S3 server that goes away: the app keeps serving the loaded version."""
    from moto.server import ThreadedMotoServer

    from tests.inference.inference_helpers import free_port
    from tests.testkit import empty_s3
    from trainer.store import S3Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "outage-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "outage-test-secret")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # A second server in this process sees the same moto state as the session's: start empty.
    store = empty_s3(S3Store(f"127.0.0.1:{port}"))
    store.RETRIES = 2  # keep the outage short for the test; production keeps 5
    publish_version(store, V1)
    with serve_app(store.url, tmp_path / "cache") as (base, app):
        wait_for_version(base, V1)
        app.state.registry.store.RETRIES = 2
        server.stop()
        wait_until(lambda: app.state.registry.last_error, "the poller to notice the outage")
        assert "unreachable" in app.state.registry.last_error
        r = httpx.post(f"{base}/predict", files={"file": ("red.png", RED, "image/png")})
        assert r.status_code == 200 and r.json()["model_version"] == V1
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert httpx.get(f"{base}/healthz").status_code == 200


def delete_version(store, version: str, name: str = MODEL_NAME) -> None:
    """What an operator's cleanup does: the version's folder goes, latest.json stays."""
    import shutil

    shutil.rmtree(store.root / "models" / name / "versions" / version)


def test_latest_naming_a_deleted_version_falls_back_to_the_newest_loadable(local_store,
                                                                           tmp_path):
    """Issue 9 #15: not a store outage. The app serves the newest version that loads
    (here V2: the newer V3 is gone, V4 lost its model), becomes Ready, never backs off."""
    v3, v4 = "20261125T000000Z", "20261126T000000Z"
    for version in (V1, V2, v3):
        publish_version(local_store, version)
    delete_version(local_store, v3)  # latest.json names a version that no longer exists
    with serve_app(local_store.url, tmp_path / "cache") as (base, app):
        registry = app.state.registry
        wait_for_version(base, V2)
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        assert (MODEL_NAME, v3) in registry.rejected
        assert "missing" in registry.rejected[(MODEL_NAME, v3)]
        assert registry.last_error is None  # not counted as a store error
        r = httpx.post(f"{base}/predict", files={"file": ("red.png", RED, "image/png")})
        assert r.status_code == 200 and r.json()["model_version"] == V2
        # A newer version whose model is broken: still V2; then a good one is loaded.
        publish_version(local_store, v4, skip_files=("model.pt2",))
        wait_until(lambda: (MODEL_NAME, v4) in registry.rejected, "v4 rejected")
        assert registry.current.version == V2 and registry.last_error is None
        v5 = "20261127T000000Z"
        publish_version(local_store, v5)
        wait_for_version(base, v5)


def test_fallback_skips_every_broken_older_version(local_store, tmp_path):
    from inference.published.registry import Registry

    v3 = "20261125T000000Z"
    publish_version(local_store, V1)
    publish_version(local_store, V2, model_bytes=b"not a program")
    publish_version(local_store, v3)
    delete_version(local_store, v3)
    registry = Registry(local_store, tmp_path / "cache")
    assert registry.check_once()
    assert registry.current.version == V1
    assert set(registry.rejected) == {(MODEL_NAME, V2), (MODEL_NAME, v3)}
    assert not registry.check_once()  # nothing new: no download, no error


def test_fallback_follows_publication_order_not_version_names(local_store, tmp_path):
    """Step 4: a pod with a lagging clock names its version earlier than the one published
    before it; ``sequence`` (meta.json, latest.json) is the order, so the fallback from a
    deleted latest version is the version published last before it, whatever the names."""
    from inference.published.registry import Registry

    first = publish_version(local_store, "20261120T000000Z-aaaa")  # sequence 1
    slow = publish_version(local_store, "20261110T000000Z-bbbb")   # sequence 2 (clock lags)
    gone = publish_version(local_store, "20261125T000000Z-cccc")   # sequence 3, then deleted
    delete_version(local_store, gone)
    registry = Registry(local_store, tmp_path / "cache")
    assert registry.check_once()
    assert registry.current.version == slow  # by name, "aaaa" would look newer
    assert [m.version for m in registry.list_versions(MODEL_NAME)] == [slow, first]


def test_fallback_may_go_to_a_later_name_published_earlier(local_store, tmp_path):
    """The only older version by sequence has a LATER name than the deleted latest one
    (the deleted one's pod clock lagged): it is still what the app falls back to."""
    from inference.published.registry import Registry

    early = publish_version(local_store, "20261130T000000Z-aaaa")  # sequence 1
    gone = publish_version(local_store, "20261125T000000Z-bbbb")   # sequence 2 (clock lags)
    delete_version(local_store, gone)
    registry = Registry(local_store, tmp_path / "cache")
    assert registry.check_once()
    assert registry.current.version == early
