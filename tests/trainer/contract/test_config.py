"""TrainConfig validation, the fields that define a run, and how the CLI merges a config file with flags."""

from __future__ import annotations

import json

import pytest

from tests.trainer.trainer_procs import run_trainer, trainer_env
from trainer.cli import build_parser, train_config_from_args
from trainer.contract.config import (
    DEFAULT_RECIPE,
    MODEL_RECIPES,
    ConfigError,
    RunIdentity,
    TrainConfig,
)
from trainer.contract.errors import CONFIG_EXIT

STACK_KEYS = {"dataset": "digits", "model": "smallcnn", "epochs": 3, "batch_size": 64,
              "lr": 0.1, "seed": 7}


def test_the_stacks_train_json_keys_are_accepted():
    cfg = TrainConfig.from_dict(STACK_KEYS)
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed) == (
        "digits", "smallcnn", 3, 64, 0.1, 7)


def test_unknown_key_is_named_with_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) 'batchsize'.*batch_size"):
        TrainConfig.from_dict({**STACK_KEYS, "batchsize": 3})


@pytest.mark.parametrize("key, value, message", [
    ("dataset", "mnist", r"dataset: 'mnist' is not allowed; choose one of cifar10, imagefolder"),
    ("model", "vgg", r"model: 'vgg' is not allowed; choose one of resnet18"),
    ("epochs", 0, r"epochs: must be an integer >= 1, got 0"),
    ("epochs", 2.5, r"epochs: must be an integer >= 1, got 2.5"),
    ("batch_size", True, r"batch_size: must be an integer >= 1, got True"),
    ("lr", 0, r"lr: must be a number > 0.0, got 0"),
    ("lr", "fast", r"lr: must be a number > 0.0, got 'fast'"),
    ("seed", -1, r"seed: must be an integer >= 0"),
    ("momentum", 1.0, r"momentum: must be a number >= 0.0 and < 1.0"),
    ("augment", "mixup", r"augment: 'mixup' is not allowed; choose one of auto, none"),
])
def test_bad_values_name_the_key_and_what_is_allowed(key, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({**STACK_KEYS, key: value})


def test_defining_fields_are_what_defines_the_result_only():
    """What RunIdentity hashes of the config (test_models.py: data and model code too)."""
    base = TrainConfig.from_dict(STACK_KEYS).defining_fields()
    for operational in ({"log_every": 5}, {"precision": "fp32"}, {"keep_checkpoints": 5},
                        {"augment": "crop"}):  # digits' "auto" is "crop"
        assert TrainConfig.from_dict({**STACK_KEYS, **operational}).defining_fields() == base
    for key, value in [("seed", 8), ("lr", 0.05), ("epochs", 4), ("batch_size", 32),
                       ("model", "resnet18"), ("augment", "none"), ("image_size", 16)]:
        assert TrainConfig.from_dict({**STACK_KEYS, key: value}).defining_fields() != base, key


def test_digits_are_not_flipped_by_default():
    assert TrainConfig(dataset="digits").resolved_augment == "crop"
    assert TrainConfig(dataset="cifar10").resolved_augment == "crop+flip"


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(STACK_KEYS))
    args = build_parser().parse_args(["train", "--config", str(path), "--epochs", "9",
                                      "--batch-size", "16", "--lr", "0.01"])
    cfg = train_config_from_args(args)
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (9, 16, 0.01)
    assert (cfg.dataset, cfg.model, cfg.seed) == ("digits", "smallcnn", 7)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object, got list"),
])
def test_unreadable_config_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "train.json"
    path.write_text(content)
    args = build_parser().parse_args(["train", "--config", str(path)])
    with pytest.raises(ConfigError, match=message):
        train_config_from_args(args)


def test_cli_reports_a_config_error_in_one_line_and_fails(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({**STACK_KEYS, "epochz": 3}))
    result = run_trainer(["train", "--config", str(path), "--store", str(tmp_path / "s")],
                         trainer_env(), timeout=120)
    assert result.returncode == CONFIG_EXIT  # a restart would fail the same way
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "unknown config key(s) 'epochz'" in errors[0]
    assert "Traceback" not in result.stderr


# run_id of configs written before the recipe fields existed (computed by that code): an
# upgrade must not restart their runs or republish them.
OLDER_RUN_IDS = [
    (STACK_KEYS, "92ed05e27e"),
    ({}, "2cccaced60"),
    ({"schedule": "cosine", "label_smoothing": 0.1, "augment": "crop"}, "255565c1d7"),
]


@pytest.mark.parametrize("values, run_id", OLDER_RUN_IDS)
def test_configs_from_before_recipes_keep_their_run_id(values, run_id):
    cfg = TrainConfig.from_dict(values)
    assert RunIdentity(cfg, "sha256:aa", "smallcnn@1").run_id == run_id


def test_auto_recipe_fields_take_the_models_recipe():
    assert TrainConfig(model="resnet18").recipe == DEFAULT_RECIPE
    fast = TrainConfig(model="fastcifar").recipe
    assert fast == MODEL_RECIPES["fastcifar"] and fast.test_flip and fast.schedule == "linear"
    # digits are never flipped, so they are not judged on mirror images either
    assert TrainConfig(model="fastcifar", dataset="digits").recipe.test_flip is False
    explicit = TrainConfig(model="fastcifar", label_smoothing=0.0, schedule="cosine",
                           crop_padding=0.125, test_flip=False).recipe
    assert (explicit.label_smoothing, explicit.schedule, explicit.crop_padding,
            explicit.test_flip) == (0.0, "cosine", 0.125, False)


def test_a_recipe_value_defines_the_run_whether_auto_or_spelled_out():
    auto = TrainConfig(model="fastcifar").defining_fields()
    spelled = TrainConfig(model="fastcifar", label_smoothing=0.2, schedule="linear",
                          warmup=0.0, crop_padding=0.0625, test_flip=True).defining_fields()
    assert auto == spelled
    for change in ({"label_smoothing": 0.1}, {"warmup": 0.2}, {"crop_padding": 0.125},
                   {"test_flip": False}, {"schedule": "onecycle"}):
        assert TrainConfig(model="fastcifar", **change).defining_fields() != auto, change


@pytest.mark.parametrize("change, message", [
    ({"label_smoothing": 1.0}, r"label_smoothing: must be a number >= 0.0 and < 1.0 or 'auto'"),
    ({"label_smoothing": "some"}, r"label_smoothing: .* or 'auto', got 'some'"),
    ({"schedule": "step"}, r"schedule: 'step' is not allowed; choose one of auto, onecycle, linear"),
    ({"warmup": -0.1}, r"warmup: must be a number >= 0.0 and < 1.0 or 'auto'"),
    ({"warmup": 0.1, "schedule": "cosine"}, r"warmup: the cosine schedule has no warm-up"),
    ({"crop_padding": 0}, r"crop_padding: must be a number > 0.0 and <= 0.5 or 'auto'"),
    ({"crop_padding": 0.6}, r"crop_padding: must be a number > 0.0 and <= 0.5"),
    ({"crop_padding": 0.1, "augment": "flip"}, r"crop_padding: .* augment 'flip' does not crop"),
    ({"test_flip": 1}, r"test_flip: must be true, false or 'auto', got 1"),
    ({"test_flip": "yes"}, r"test_flip: must be true, false or 'auto', got 'yes'"),
    ({"test_flip": True, "augment": "crop"}, r"test_flip: needs an augment that flips"),
    ({"model": "fastcifar", "dataset": "imagefolder", "image_size": 1},
     r"image_size: model 'fastcifar' takes images of at least 2x2 pixels, got 1"),
])
def test_bad_recipe_values_name_the_key_and_what_is_allowed(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({"dataset": "cifar10", "model": "resnet18", **change})


def test_fastcifar_takes_any_image_size_from_two_pixels():
    for size in (2, 3, 8, 224):
        assert TrainConfig(model="fastcifar", dataset="imagefolder", image_size=size)
    assert TrainConfig(model="resnet18", dataset="imagefolder", image_size=1)
