"""Issue 20 #6 with real trainer processes: a second job of a run that another job trains
waits (bounded) or stops with a clear message, and the run publishes one version; a job
stopped by SIGTERM (a deleted PyTorchJob) releases the run at once."""

from __future__ import annotations

import json
import signal

import pytest

from tests.trainer.runs import identity_of
from tests.trainer.tracking.test_tracking_run import finish, read_until_epoch
from tests.trainer.trainer_procs import events, run_trainer, start_trainer, trainer_env
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.contract.records import RunLeaseRecord

pytestmark = pytest.mark.slow

CONFIG = {"dataset": "digits", "model": "smallcnn", "epochs": 4, "batch_size": 16,
          "lr": 0.05, "seed": 11, "log_every": 10**6}


@pytest.fixture
def job(tmp_path, local_store):
    local_store.ensure_buckets()
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(CONFIG))
    keys = ModelKeys(TrainConfig.from_dict(CONFIG).model_name)
    run_id = identity_of(TrainConfig.from_dict(CONFIG)).run_id
    return ["train", "--config", str(config_file), "--store", str(local_store.root)], keys, run_id


def versions_of(store, keys: ModelKeys) -> list[str]:
    return [v for k in store.list(keys.versions) if (v := keys.version_of_meta_key(k))]


def test_a_second_job_stops_or_waits_and_the_run_publishes_one_version(job, local_store):
    args, keys, run_id = job
    # A long ttl: job A, stopped below, still counts as alive while the others look.
    first = start_trainer(args, trainer_env({"TRAINSTACK_LEASE_TTL_S": "600"}))
    lines: list[str] = []
    read_until_epoch(first, 1, lines)
    first.send_signal(signal.SIGSTOP)
    try:
        impatient = run_trainer(args, trainer_env({"TRAINSTACK_LEASE_WAIT_S": "2"}))
        assert impatient.returncode != 0
        said = impatient.stdout + impatient.stderr
        assert f"run {run_id} is being trained by another job" in said
        assert "Traceback" not in said
        patient = start_trainer(args, trainer_env({"TRAINSTACK_LEASE_WAIT_S": "600"}))
        waited: list[str] = []
        for line in patient.stdout:  # it says it waits, then waits
            waited.append(line)
            if "waiting for it" in line:
                break
    finally:
        first.send_signal(signal.SIGCONT)
    output = finish([first], lines)
    (version,) = versions_of(local_store, keys)
    assert events(output, "done")[0]["version"] == version
    later = finish([patient], waited)
    assert "released by" in later  # the lease of A's orderly exit: taken at once
    assert events(later, "done")[0]["version"] == version
    assert not events(later, "epoch")  # it trained nothing
    assert versions_of(local_store, keys) == [version]


def test_a_terminated_job_releases_the_run(job, local_store):
    args, keys, run_id = job
    proc = start_trainer(args, trainer_env())
    read_until_epoch(proc, 1, [])
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    lease = RunLeaseRecord.from_json(local_store.get_bytes(keys.lease(run_id)))
    assert lease.released
