"""memoryPerWorker against what a training process of the configured run needs: the
trainer's own measured figures (trainer.limits.footprint) for the model and batchSize at
the dataset's image size, refused at `pulumi up` rather than in a pod that the kernel or
the trainer stops on every restart (issue 32)."""

from __future__ import annotations

import pytest

from infra.config.keys import parse_config
from infra.config.stack_config import MIN_WORKER_MEMORY
from tests.infra.infra_helpers import PUSHED
from trainer.contract.errors import ConfigError
from trainer.limits.footprint import MIB, Footprint, quantity, stack_data_bytes

DEFAULT_RUN = Footprint("resnet18", 32, 128, peers=True, tracking=True)


def need(run: Footprint, dataset: str = "cifar10") -> int:
    return run.need(stack_data_bytes(dataset)[0])


def test_the_default_run_fits_the_default_memory():
    cfg = parse_config(PUSHED)
    assert (cfg.model, cfg.batch_size, cfg.workers, cfg.mlflow) == ("resnet18", 128, 2, True)
    assert need(DEFAULT_RUN) <= 3 * 2**30 == 3 * 1024 * MIB  # memoryPerWorker 3Gi


def test_less_than_the_run_needs_is_refused_naming_what_it_needs():
    least = need(DEFAULT_RUN)
    parse_config({**PUSHED, "memoryPerWorker": str(least)})  # bytes, exactly enough
    with pytest.raises(ConfigError, match="trainstack:memoryPerWorker") as refused:
        parse_config({**PUSHED, "memoryPerWorker": str(least - 1)})
    message = str(refused.value)
    assert f"at least {quantity(least)} for model resnet18 with batchSize 128 at 32 px " \
           "(dataset cifar10), with 2 workers (DDP) and MLflow tracking" in message
    assert f"needs about {-(-least // MIB):,} MiB (cifar10 decoded in memory" in message
    assert "\n" not in message


@pytest.mark.parametrize(("changes", "run", "dataset"), [
    ({"batchSize": "16"}, Footprint("resnet18", 32, 16, peers=True, tracking=True), "cifar10"),
    ({"model": "smallcnn", "workers": "1", "mlflow": "false"},
     Footprint("smallcnn", 32, 128), "cifar10"),
    ({"dataset": "digits", "model": "fastcifar"},
     Footprint("fastcifar", 8, 128, peers=True, tracking=True), "digits"),
    ({"dataset": "imagefolder", "datasetSource": "https://example.com/photos.tar.gz"},
     DEFAULT_RUN, "imagefolder"),
])
def test_the_need_follows_the_model_batch_dataset_workers_and_tracking(changes, run, dataset):
    """Each configuration is held to its own run's figures: exactly enough passes."""
    least = need(run, dataset)
    parse_config({**PUSHED, **changes, "memoryPerWorker": str(least)})
    with pytest.raises(ConfigError, match=f"at least {quantity(least)} "):
        parse_config({**PUSHED, **changes, "memoryPerWorker": str(least - 1)})


def test_on_gpus_only_the_floor_holds():
    """A GPU keeps the activations; the host memory of such a process is not measured."""
    parse_config({**PUSHED, "gpusPerWorker": "1", "memoryPerWorker": MIN_WORKER_MEMORY})

