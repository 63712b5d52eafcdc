"""Micro-batching (issue 14): the Batcher alone, then the app batching real requests."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from inference.serving.batcher import Batcher
from tests.inference.inference_helpers import V1, serve_app, wait_for_version
from tests.inference.modelkit import CNN_NAME, png, publish_cnn
from trainer.data.pixels import to_pixels

DEADLINE = 60  # seconds: a wait, never a speed assertion


class Recorder:
    """A run function that records its batches and can be held back by a gate."""

    def __init__(self, fail_on=None):
        self.batches: list[tuple[object, list]] = []
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()
        self.fail_on = fail_on

    def __call__(self, key, items):
        self.entered.set()
        self.gate.wait(DEADLINE)
        self.batches.append((key, list(items)))
        if self.fail_on in items:
            raise ValueError(f"cannot run {self.fail_on}")
        return [f"{key}:{item}" for item in items]


def test_a_lone_request_never_waits_for_a_batch():
    run = Recorder()
    batcher = Batcher(run, max_batch=8, max_wait_s=3600)  # would wait an hour
    try:
        assert batcher.submit("v1", 1).result(DEADLINE) == "v1:1"
        with batcher.expect() as ticket:
            assert ticket.submit("v1", 2).result(DEADLINE) == "v1:2"
    finally:
        batcher.stop()
    assert [items for _, items in run.batches] == [[1], [2]]


def test_requests_still_decoding_are_waited_for_and_a_dropped_one_is_not():
    run = Recorder()
    batcher = Batcher(run, max_batch=8, max_wait_s=3600)
    try:
        coming = batcher.expect()
        first = batcher.submit("v1", 1)
        second = coming.submit("v1", 2)  # the batch held for it
        assert (first.result(DEADLINE), second.result(DEADLINE)) == ("v1:1", "v1:2")
        dropped = batcher.expect()
        third = batcher.submit("v1", 3)
        dropped.close()  # its decode failed: the batch goes without it
        assert third.result(DEADLINE) == "v1:3"
    finally:
        batcher.stop()
    assert [items for _, items in run.batches] == [[1, 2], [3]]


def test_batches_are_bounded_and_each_holds_one_version():
    run = Recorder()
    batcher = Batcher(run, max_batch=2, max_wait_s=0)
    try:
        run.gate.clear()
        first = batcher.submit("a", 1)
        assert run.entered.wait(DEADLINE)  # its batch runs, held at the gate
        rest = [batcher.submit(key, item) for key, item in
                [("a", 2), ("b", 3), ("a", 4), ("a", 5)]]
        run.gate.set()
        assert [f.result(DEADLINE) for f in [first, *rest]] == ["a:1", "a:2", "b:3", "a:4",
                                                                 "a:5"]
    finally:
        batcher.stop()
    # Oldest first; a batch takes only its first request's version, at most max_batch.
    assert run.batches == [("a", [1]), ("a", [2, 4]), ("b", [3]), ("a", [5])]


def test_a_failing_input_fails_only_its_own_request():
    run = Recorder(fail_on="bad")
    batcher = Batcher(run, max_batch=8, max_wait_s=3600)
    try:
        tickets = [batcher.expect() for _ in range(3)]
        futures = [t.submit("v", item) for t, item in zip(tickets, ["ok1", "bad", "ok2"])]
        assert futures[0].result(DEADLINE) == "v:ok1" and futures[2].result(DEADLINE) == "v:ok2"
        with pytest.raises(ValueError, match="cannot run bad"):
            futures[1].result(DEADLINE)
    finally:
        batcher.stop()
    assert run.batches[0][1] == ["ok1", "bad", "ok2"]  # tried together first


def test_a_cancelled_request_is_skipped_and_the_thread_lives_on():
    """A client that disconnects cancels its future while it waits in the queue."""
    run = Recorder()
    batcher = Batcher(run, max_batch=8, max_wait_s=0)
    try:
        run.gate.clear()
        first = batcher.submit("v", 1)
        assert run.entered.wait(DEADLINE)
        gone, kept = batcher.submit("v", 2), batcher.submit("v", 3)
        assert gone.cancel()
        run.gate.set()
        assert (first.result(DEADLINE), kept.result(DEADLINE)) == ("v:1", "v:3")
        assert batcher.submit("v", 4).result(DEADLINE) == "v:4"
    finally:
        batcher.stop()
    assert [items for _, items in run.batches] == [[1], [3], [4]]


def test_after_stop_submissions_fail_at_once():
    batcher = Batcher(Recorder())
    batcher.stop()
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.submit("v", 1).result(DEADLINE)


# -- the app ------------------------------------------------------------------------

def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def mixed_uploads() -> list[tuple[str, bytes]]:
    """Different sizes, modes and formats, as real clients send them."""
    rng = np.random.default_rng(7)

    def noise(size, mode="RGB"):
        shape = (size[1], size[0], 3)
        return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "RGB").convert(mode)

    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        ("photo.jpg", encoded(noise((640, 480)), "JPEG", quality=85)),
        ("rotated.jpg", encoded(noise((320, 240)), "JPEG", exif=exif.tobytes())),
        ("small.png", png(noise((32, 32)))),
        ("alpha.png", png(noise((300, 200), "RGBA"))),
        ("grey.png", png(noise((100, 150), "L"))),
        ("palette.gif", encoded(noise((64, 64)).convert("P"), "GIF")),
        ("wide.png", png(Image.fromarray(rng.integers(0, 65535, (90, 70), dtype=np.uint16)))),
        ("cmyk.jpg", encoded(noise((200, 100), "CMYK"), "JPEG")),
    ]


def one_at_a_time(model_path, meta, data: bytes) -> list[float]:
    """The reference, without the app: the program file, the pixels, meta's normalization."""
    model = torch.export.load(str(model_path)).module()
    x = torch.from_numpy(to_pixels(data, meta.input_size)).float()[None] / 255
    x = (x - torch.tensor(meta.mean).view(1, -1, 1, 1)) / torch.tensor(meta.std).view(1, -1, 1, 1)
    with torch.inference_mode():
        return torch.softmax(model(x), dim=1)[0].tolist()


def post(base: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base}/predict", files={"file": (name, data)}, timeout=DEADLINE)


@pytest.fixture
def cnn_app(local_store, tmp_path):
    publish_cnn(local_store, V1)
    with serve_app(local_store.url, tmp_path / "cache", model_name=CNN_NAME, precision="fp32",
                   max_batch=8, max_batch_wait_ms=200, decode_threads=4) as (base, app):
        wait_for_version(base, V1)
        records = []
        app.state.engine.batcher.on_batch.append(records.append)
        yield base, app, records


def test_batched_answers_equal_one_at_a_time_answers(cnn_app):
    base, app, records = cnn_app
    uploads = mixed_uploads() * 3
    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(lambda u: post(base, *u), uploads))
    assert [r.status_code for r in answers] == [200] * len(uploads), answers[0].text
    assert max(r.size for r in records) > 1, "no two requests were batched"
    current = app.state.registry.current
    for (name, data), r in zip(uploads, answers):
        expected = one_at_a_time(current.directory / "model.pt2", current.meta, data)
        got = [r.json()["probabilities"][c] for c in current.meta.classes]
        assert np.abs(np.array(got) - expected).max() < 1e-4, name
        assert r.json()["prediction"] == current.meta.classes[int(np.argmax(expected))], name
    metrics = httpx.get(f"{base}/metrics").text
    assert f"trainstack_batch_size_count {float(len(records))}" in metrics
    assert f"trainstack_batch_queue_wait_seconds_count {float(len(uploads))}" in metrics
    assert 'trainstack_model_precision{precision="fp32"} 1.0' in metrics
    assert 'trainstack_model_program{program="frozen"} 1.0' in metrics


def test_a_bad_input_in_a_batch_fails_only_its_own_request(cnn_app):
    base, _, records = cnn_app
    good = mixed_uploads()[:4]
    bad = [("notes.txt", b"not an image"), ("cut.png", png(Image.new("RGB", (50, 50)))[:60]),
           ("empty.png", b"")]
    uploads = good + bad + good
    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(lambda u: post(base, *u), uploads))
    statuses = [r.status_code for r in answers]
    assert statuses == [200] * 4 + [400] * 3 + [200] * 4, [r.text for r in answers]
    assert all(r.json()["model_version"] == V1 for r in answers if r.status_code == 200)
    assert max(r.size for r in records) > 1


def test_the_one_at_a_time_path_gives_the_same_answers(local_store, tmp_path):
    """The benchmark's baseline (batching off) is the same function, one image per call."""
    publish_cnn(local_store, V1)
    uploads = mixed_uploads()
    results = {}
    for batching in (True, False):
        with serve_app(local_store.url, tmp_path / f"cache-{batching}", model_name=CNN_NAME,
                       precision="fp32", batching=batching) as (base, app):
            wait_for_version(base, V1)
            assert (app.state.engine.batcher is None) == (not batching)
            with ThreadPoolExecutor(4) as pool:
                results[batching] = [r.json() for r in pool.map(lambda u: post(base, *u), uploads)]
    for batched, alone in zip(results[True], results[False]):
        assert batched["prediction"] == alone["prediction"]
        for label, p in alone["probabilities"].items():
            assert batched["probabilities"][label] == pytest.approx(p, abs=1e-4)


def test_a_lone_request_gets_the_idle_cpus_and_a_batch_does_not():
    """A prediction with no other in flight (from its first byte to its answer) runs with
    ``lone_threads`` intra-op threads: the other CPUs are idle. A batch, or a request while
    another is uploading or decoding, runs with ``torch_threads``, restored after."""
    from inference.serving.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(torch_threads=1, lone_threads=2, max_wait_ms=200))
    seen = []

    def spy(items):
        seen.append((len(items), torch.get_num_threads()))
        return [[1.0]] * len(items)

    engine.runner = lambda version: spy
    try:
        with engine.request():
            engine.batcher.submit("v", 0).result(timeout=DEADLINE)  # alone
            with engine.request():  # a second prediction arrives (still uploading, say)
                engine.batcher.submit("v", 1).result(timeout=DEADLINE)  # not alone
                with engine.batcher.expect() as ticket:
                    pair = [engine.batcher.submit("v", i) for i in (10, 11)]  # a batch
                    [future.result(timeout=DEADLINE) for future in pair]
                    ticket.close()
            engine.batcher.submit("v", 2).result(timeout=DEADLINE)  # alone again
    finally:
        engine.close()
    assert seen == [(1, 2), (1, 1), (2, 1), (1, 2)], seen
    assert engine.in_flight() == 0


def test_a_request_during_a_version_warm_up_does_not_run_alone(monkeypatch):
    """Warming a new version up keeps the CPUs busy: it counts as a prediction in flight."""
    from inference.serving.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(torch_threads=1, lone_threads=2, batching=False))
    counted = []

    class Spy:
        def __init__(self, version, precision, program):
            pass

        def __call__(self, items):
            counted.append(engine.in_flight())
            return [[1.0]] * len(items)

    monkeypatch.setattr("inference.serving.engine.Runner", Spy)
    monkeypatch.setattr(engine, "_precision_of", lambda version: "fp32")
    version = SimpleNamespace(name="m", version="v1", meta=SimpleNamespace(input_size=[3, 8, 8]))
    try:
        engine.prepare(version)
    finally:
        engine.close()
    assert counted and all(n == 1 for n in counted), counted
    assert engine.in_flight() == 0
