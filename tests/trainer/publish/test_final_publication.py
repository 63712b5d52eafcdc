"""Work after the last epoch needs no peers (the operator restarts only a failed Master).

PyTorchJob replicas restart on failure one by one (restartPolicy OnFailure): a Worker that
exited 0 is never started again. So no rank may exit before rank 0's final checkpoint is
durable, and a restarted rank 0 that finds it publishes alone, without a rendezvous.
The failures here are real ones: a store path that cannot be created.
"""

from __future__ import annotations

import json

import pytest

from tests.testkit import free_port
from tests.trainer.trainer_procs import events, operator_env, start_trainer
from trainer.contract.config import TrainConfig

pytestmark = pytest.mark.slow

CFG = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=64, lr=0.05, seed=5)
ARGS = ["train", "--dataset", "digits", "--model", "smallcnn", "--epochs", "1",
        "--batch-size", "64", "--lr", "0.05", "--seed", "5"]
# Short enough that a rank 0 stuck in a rendezvous fails the test quickly, not after 600 s.
DIST_ENV = {"TRAINSTACK_DIST_TIMEOUT_S": "45"}


def block(path) -> None:
    """A file where the trainer needs a folder: every write below it fails (even as root)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("in the way\n")


def run_group(store_url: str, ranks=(0, 1), world: int = 2) -> dict[int, tuple[int, str]]:
    port = free_port()
    procs = {rank: start_trainer([*ARGS, "--store", store_url],
                                 operator_env(rank, world, port, DIST_ENV)) for rank in ranks}
    return {rank: (proc.wait(timeout=240), proc.stdout.read()) for rank, proc in procs.items()}


def test_a_restarted_master_publishes_alone_after_a_failed_publication(local_store):
    local_store.ensure_buckets()
    versions_dir = local_store.root / "models" / CFG.model_name / "versions"
    block(versions_dir)

    first = run_group(local_store.url)
    (rc0, _), (rc1, out1) = first[0], first[1]
    assert rc0 != 0, "publication cannot succeed while the versions folder is blocked"
    assert rc1 == 0, out1[-3000:]
    assert not local_store.exists(f"models/{CFG.model_name}/latest.json")

    versions_dir.unlink()
    # The operator restarts the Master only, with the same env: WORLD_SIZE=2, RANK=0.
    again = run_group(local_store.url, ranks=(0,))
    rc, out = again[0]
    assert rc == 0, out[-3000:]
    assert "joined process group" not in out
    assert not events(out, "epoch"), "the finished run was trained again"
    (published,) = events(out, "published")
    latest = json.loads(local_store.get_bytes(f"models/{CFG.model_name}/latest.json"))
    assert latest["version"] == published["version"]


def test_no_worker_exits_before_the_final_checkpoint_is_durable(local_store):
    local_store.ensure_buckets()
    block(local_store.root / "models" / CFG.model_name / "runs")  # the checkpoint cannot be written

    first = run_group(local_store.url)
    (rc0, out0), (rc1, out1) = first[0], first[1]
    assert rc0 != 0, out0[-3000:]
    assert rc1 != 0, "a worker succeeded although the run's final checkpoint was never written: " \
        "the operator would never restart it\n" + out1[-3000:]
