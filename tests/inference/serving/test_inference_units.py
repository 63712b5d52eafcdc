"""Units of the app without a server: image modes, meta.json checks, model discovery,
thread defaults and the temp cache's lifetime."""

from __future__ import annotations

import io
import json
from functools import partial

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from inference import app as app_module
from inference.published.registry import Registry
from inference.serving.predict import BadImage, decode
from tests.inference.modelkit import MODEL_NAME, publish_version
from trainer.contract.errors import MetaError
from trainer.contract.schema import VersionMeta
from trainer.limits import cpus
from trainer.store import LocalStore


def good_meta(**changes):
    meta = {"model": "m", "dataset": "d", "version": "20260101T000000Z", "run_id": "r",
            "classes": ["a", "b"], "input_size": [3, 8, 8], "mean": [0.5] * 3,
            "std": [0.25] * 3, "train_config": {}, "created_at": "2026-01-01T00:00:00Z",
            "metrics": {"test_acc": 0.5, "test_loss": 1.0, "epochs": 1, "train_seconds": 1.0},
            "files": ["model.pt2"], "examples": []}
    return {**meta, **changes}


# tensor = pixels / 255
GREY_META = VersionMeta.from_json(json.dumps(good_meta(input_size=[1, 8, 8], mean=[0.0],
                                                       std=[1.0])))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_16_bit_gradient_is_rescaled_not_saturated():
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    x = decode(encoded(Image.fromarray(ramp), "PNG"), GREY_META)[0] / 255
    assert x.min() < 0.1 and x.max() > 0.9  # PIL's own convert("L") gives all 1.0 here
    assert bool((x[:, 1:] >= x[:, :-1]).all())  # still a left-to-right ramp
    assert abs(x.mean() - 0.5) < 0.05


@pytest.mark.parametrize("values, mode, expected", [
    (np.full((8, 8), 0.25, np.float32), "F", 0.25),  # 0..1 floats: the type's range
    (np.full((8, 8), 32896, np.int32), "I", 0.5),  # 16-bit values held as 32-bit
    (np.tile(np.arange(-1000, 1000, 250), (8, 1)).astype(np.int32), "I", None),  # own range
])
def test_wide_modes_map_to_the_pixel_range(values, mode, expected):
    image = Image.fromarray(values)
    assert image.mode == mode
    x = decode(encoded(image, "TIFF"), GREY_META)[0] / 255
    if expected is None:
        assert x.min() == 0.0 and x.max() == 1.0
    else:
        assert x.mean() == pytest.approx(expected, abs=0.01)


def test_lab_tiff_converts_to_grey_via_rgb():
    image = Image.new("LAB", (16, 16), (128, 128, 128))
    with pytest.raises(ValueError):  # the real failure the app used to answer with a 500
        image.convert("L")
    x = decode(encoded(image, "TIFF"), GREY_META)
    assert x.mean() == pytest.approx(119, abs=2)  # L* 50 is sRGB grey 119


def test_unconvertible_modes_and_non_finite_floats_are_bad_images():
    from trainer.data.pixels import ImageError, convert_mode

    with pytest.raises(ImageError, match="unsupported image mode La"):
        convert_mode(Image.new("La", (4, 4)), 1)
    with pytest.raises(BadImage, match="non-finite"):
        decode(encoded(Image.fromarray(np.full((4, 4), np.nan, np.float32)), "TIFF"), GREY_META)


@pytest.mark.parametrize("meta", [
    [1, 2], good_meta(input_size=32), good_meta(input_size="3x8x8"), good_meta(input_size=None),
    good_meta(input_size=[3, 8]), good_meta(input_size=[2, 8, 8]),
    good_meta(input_size=[3, 8.0, 8]), good_meta(mean=0.5), good_meta(std=[0.25, 0.25]),
    good_meta(std=[0.25, 0, 0.25]), good_meta(mean=["x", "y", "z"]), good_meta(classes=[]),
    good_meta(classes="ab"), good_meta(files="model.pt2"), good_meta(examples=[3]),
    good_meta(files=["../../etc/passwd"]), good_meta(examples=["/abs.png"]),
    good_meta(metrics={"test_acc": "high"}), good_meta(version="a/b"),
    {k: v for k, v in good_meta().items() if k != "classes"},
])
def test_every_meta_problem_is_a_meta_error(meta):
    with pytest.raises(MetaError):
        VersionMeta.from_json(json.dumps(meta))


def test_good_meta_passes_and_round_trips():
    meta = VersionMeta.from_json(json.dumps(good_meta(future_field="ignored")))
    assert VersionMeta.from_json(meta.to_json()) == meta


class CountingStore(LocalStore):
    lists = 0

    def list(self, prefix):
        self.lists += 1
        return super().list(prefix)


def test_model_names_are_rediscovered_rarely_but_versions_read_every_poll(tmp_path):
    store = CountingStore(tmp_path / "store")
    publish_version(store, "20260101T000000Z")
    registry = Registry(store, tmp_path / "cache", poll_seconds=0.1)
    registry.discovery_seconds = 3600
    assert registry.check_once() and registry.current.version == "20260101T000000Z"
    publish_version(store, "20260102T000000Z")  # same model: found without listing
    publish_version(store, "20260103T000000Z", name="colournet-other")
    assert registry.check_once() and registry.current.version == "20260102T000000Z"
    assert not registry.check_once()
    assert store.lists == 1
    registry.discovery_seconds = 0  # discovery due: the new model name is found
    assert registry.check_once() and registry.current.name == "colournet-other"
    assert store.lists == 2


def test_latest_json_without_a_version_is_ignored(tmp_path):
    store = LocalStore(tmp_path / "store")
    publish_version(store, "20260101T000000Z")
    store.put_bytes(f"models/{MODEL_NAME}/latest.json", json.dumps(["oops"]).encode())
    registry = Registry(store, tmp_path / "cache")
    assert registry.resolve() is None
    assert Registry(store, tmp_path / "c2", model_name=MODEL_NAME).resolve() is None


def test_default_threads_follow_the_cgroup_quota(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("200000 100000\n")  # a pod limited to 2 CPUs
    monkeypatch.setattr(app_module, "usable_cpus",
                        partial(cpus.usable_cpus, cgroup_root=tmp_path))
    usable = cpus.usable_cpus(cgroup_root=tmp_path)
    assert usable <= 2
    # Batched: the inference thread gets all CPUs but one; one at a time: half each.
    assert app_module.default_torch_threads(batching=True) == 1
    assert app_module.default_torch_threads(batching=False) == 1
    assert app_module.Settings().engine_config().torch_threads == 1
    assert app_module.Settings().decode_threads == usable
    (tmp_path / "cpu.max").write_text("max 100000\n")
    unlimited = cpus.usable_cpus(cgroup_root=tmp_path)
    assert app_module.default_torch_threads(batching=False) == max(1, min(4, unlimited // 2))
    assert app_module.default_torch_threads(batching=True) == max(1, min(16, unlimited - 1))


def test_temp_cache_is_removed_at_shutdown_but_a_given_one_is_kept(tmp_path):
    store = LocalStore(tmp_path / "store")
    publish_version(store, "20260101T000000Z")
    made = app_module.create_app(app_module.Settings(store=str(tmp_path / "store"),
                                                     torch_threads=1))
    given_dir = tmp_path / "given"
    given = app_module.create_app(app_module.Settings(store=str(tmp_path / "store"),
                                                      cache_dir=given_dir, torch_threads=1))
    temp_dir = made.state.registry.cache_dir
    for app in (made, given):
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            app.state.registry.check_once()
    assert given_dir.is_dir() and any(given_dir.iterdir())
    assert not temp_dir.exists()


def test_store_errors_are_logged_by_kind_and_retried(tmp_path, caplog):
    from tests.inference.inference_helpers import wait_until
    from trainer.contract.errors import BucketNotFound

    class MissingBucket(LocalStore):
        calls = 0

        def list(self, prefix):
            self.calls += 1
            raise BucketNotFound("bucket 'models' does not exist")

    store = MissingBucket(tmp_path / "store")
    registry = Registry(store, tmp_path / "cache", poll_seconds=0.01, max_backoff=0.05)
    caplog.set_level("WARNING", logger="inference.published.registry")
    registry.start()
    try:
        wait_until(lambda: store.calls >= 3, "the poller to retry")
    finally:
        registry.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("store error (BucketNotFound)" in m and "does not exist" in m for m in messages)
    assert not any("unreachable" in m for m in messages)
    assert "does not exist" in registry.last_error


def test_log_level_comes_from_trainstack_log_level(monkeypatch):
    from inference.__main__ import parse_args

    monkeypatch.setenv("TRAINSTACK_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LOG_LEVEL", "ERROR")  # no longer read
    assert parse_args(["serve"]).log_level == "DEBUG"
    monkeypatch.delenv("TRAINSTACK_LOG_LEVEL")
    assert parse_args(["serve"]).log_level == "INFO"


def test_prediction_series_stay_bounded_across_many_versions():
    """Issue 9 #16: one series per (version, class, source) forever would grow without end."""
    from inference.serving.metrics import Metrics

    metrics = Metrics()
    versions = [f"2026010{i}T000000Z" for i in range(1, 8)]
    for version in versions:
        metrics.set_model("m-d", version)
        for label in ("cat", "dog"):
            metrics.observe_prediction(version, label, "api")
    text = metrics.render().decode()
    series = [line for line in text.splitlines()
              if line.startswith("trainstack_predictions_total{")]
    shown = {line.split('model_version="')[1].split('"')[0] for line in series}
    assert shown <= set(versions[-2:]), shown  # the current version and the one before
    assert len(series) <= 2 * 2
    assert f'model_version="{versions[-1]}",predicted_class="cat",source="api"}} 1.0' in text


def test_serving_knobs_come_from_flags_or_env(monkeypatch, tmp_path):
    from inference.__main__ import parse_args, serving_settings

    monkeypatch.setenv("TRAINSTACK_MAX_BATCH", "8")
    monkeypatch.setenv("TRAINSTACK_MAX_BATCH_WAIT_MS", "2.5")
    monkeypatch.setenv("TRAINSTACK_PRECISION", "fp32")
    monkeypatch.setenv("TRAINSTACK_BATCHING", "off")
    monkeypatch.setenv("TRAINSTACK_DECODE", "full")
    monkeypatch.setenv("TRAINSTACK_PROGRAM", "eager")
    got = serving_settings(parse_args(["serve"]))
    assert (got["max_batch"], got["max_batch_wait_ms"], got["precision"], got["batching"]) == \
        (8, 2.5, "fp32", False)
    assert (got["decode"], got["program"]) == ("full", "eager")
    config = app_module.Settings(**got).engine_config()
    assert (config.decode, config.program) == ("full", "eager")
    got = serving_settings(parse_args(["serve", "--max-batch", "64", "--batching", "on",
                                       "--lone-threads", "3"]))
    assert got["max_batch"] == 64 and got["batching"] is True
    config = app_module.Settings(**got).engine_config()
    assert config.max_batch == 64 and config.max_wait_ms == 2.5 and config.lone_threads == 3
    off = serving_settings(parse_args(["serve", "--lone-threads", "0", "--torch-threads", "1"]))
    assert app_module.Settings(**off).engine_config().threads_alone == 1  # 0 turns it off


def test_a_bad_serving_setting_names_itself(tmp_path, caplog):
    from inference.__main__ import main
    from inference.serving.engine import EngineConfig
    from trainer.contract.errors import ConfigError

    with pytest.raises(ConfigError, match="max_batch = 0") as raised:
        EngineConfig(max_batch=0)
    assert raised.value.key == "max_batch"
    with pytest.raises(ConfigError, match="allowed: auto, fp32, bf16"):
        EngineConfig(precision="fp16")
    LocalStore(tmp_path / "store").ensure_buckets()
    assert main(["serve", "--store", str(tmp_path / "store"), "--max-batch-wait-ms", "-1"]) == 2
    assert "max_wait_ms = -1.0" in caplog.text


def test_a_version_folder_copied_by_hand_is_broken_not_served(tmp_path):
    """meta.json names its own version: a folder copied under another name is neither
    listed nor loaded under the wrong name."""
    import shutil

    from inference.published.versions import BrokenVersion, download_version

    store = LocalStore(tmp_path / "store")
    real = publish_version(store, "20260101T000000Z")
    versions = store.root / "models" / MODEL_NAME / "versions"
    shutil.copytree(versions / real, versions / "20260201T000000Z-copy")
    registry = Registry(store, tmp_path / "cache")
    assert [m.version for m in registry.list_versions(MODEL_NAME)] == [real]
    with pytest.raises(BrokenVersion, match="describes version"):
        download_version(store, MODEL_NAME, "20260201T000000Z-copy", tmp_path / "c2")


class NearTie(torch.nn.Module):
    """Two logits 2**-10 apart: equal once the weights are bf16, so bf16 changes every
    answer and precision 'auto' must serve this model in fp32."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 3)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.tensor([1.0, 1.0 + 2**-10, 0.0]))

    def forward(self, x):
        return self.head(x.mean(dim=(2, 3)))


def test_a_rebuilt_runner_keeps_the_precision_chosen_with_the_examples(tmp_path):
    """A queued request can outlive its version's runner (RUNNERS_KEPT) and its cached
    folder: rebuilding the runner must not re-choose without the examples."""
    from inference.published.versions import download_version
    from inference.serving.engine import RUNNERS_KEPT, Engine, EngineConfig
    from inference.serving.runner import bf16_supported

    store = LocalStore(tmp_path / "store")
    engine = Engine(EngineConfig(precision="auto"))
    tie = download_version(store, MODEL_NAME, publish_version(
        store, "20260101T000000Z", model=NearTie()), tmp_path / "cache")
    if not bf16_supported(torch.device("cpu")):
        pytest.skip("auto serves fp32 anyway on a CPU without native bf16")
    engine.prepare(tie)
    assert engine.precision(tie) == "fp32"
    for i in range(RUNNERS_KEPT):
        other = publish_version(store, f"2026010{i + 2}T000000Z")
        engine.prepare(download_version(store, MODEL_NAME, other, tmp_path / "cache"))
    for example in tie.examples:
        example.unlink()  # the registry pruned the old version's folder
    assert engine.precision(tie) == "fp32"
