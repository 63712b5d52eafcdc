"""SIGTERM at a random step of a running 2-worker PyTorchJob (its rendered pods run as
local processes, as the cluster tier runs them: tests/e2e/cluster.py plays the kubelet),
as Kueue's preemption, a drained node or a rescale deletes the pods: the kubelet sends
SIGTERM, waits the pod's grace period (30 s) and kills what is left. Every rank finishes
its step, rank 0 checkpoints there (mid-epoch, although `checkpointEverySteps` is 0),
releases the run's lease and all exit 143 inside the grace period. The next job resumes
at that very step: each sample of the stopped epoch is trained exactly once, no step is
lost. Also when only one pod is deleted (one drained node): its peers stop with it. And
a TrainJob's pods, whose PID 1 is torchrun (trainer.launch): SIGTERM to it alone reaches
its workers, which stop the same way.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.cluster import trainjob_kit
from tests.cluster.runs_kit import local_cluster, log_of, run_buckets
from tests.cluster.test_pytorchjob_runs import PYTORCHJOB
from tests.cluster.test_trainjob_runs import local_processes
from tests.infra.infra_helpers import pytorchjob
from tests.infra.render import render
from tests.testkit import WAIT_S, stop, wait_for
from tests.trainer.trainer_procs import events
from trainer.contract.layout import ModelKeys
from trainer.contract.records import RunLeaseRecord
from trainer.data.streaming.position import SAMPLE_TRACE_ENV, EpochPosition
from trainer.state.checkpoint import all_checkpoints, load_checkpoint

GRACE_S = 30  # the pods' terminationGracePeriodSeconds
EPOCHS = 3
STOPPED_EPOCH = 2  # SIGTERM during this epoch (the first one ends with its own checkpoint)
CONFIG = {**PYTORCHJOB, "namespace": "preemption", "workers": "2", "epochs": str(EPOCHS),
          "batchSize": "8", "checkpointEverySteps": "0"}
MODEL = "smallcnn-digits"


def traced_steps(folder: Path, epoch: int) -> dict[str, list[tuple[int, int, list[int]]]]:
    """Per rank file: (plan's done, step, sample ids) of each step of `epoch`."""
    found = {}
    for path in sorted(folder.glob("rank-*.txt")):
        rows = []
        for line in path.read_text().splitlines():
            e, done, step, *samples = map(int, line.split())
            if e == epoch:
                rows.append((done, step, samples))
        found[path.name] = rows
    return found


def highest_step(folder: Path, epoch: int) -> int:
    return max((step for rows in traced_steps(folder, epoch).values() for _, step, _ in rows),
               default=0)


def after_grace_period(procs, grace_s: float = GRACE_S) -> list[int]:
    """As the kubelet after SIGTERM: SIGKILL whatever still runs once the grace period is
    over. Returns every process's exit status."""
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - the grace period is over: as the kubelet does
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    return [proc.returncode for proc in procs]


def checkpointed_at_the_signal(s3_store, rank0: str, codes: list[int], trace: Path,
                               signalled_at: int, what: str) -> tuple[str, EpochPosition]:
    """Every rank exited 143; rank 0 checkpointed at the step every rank stopped after, a
    step or two after the signal, no rank trained past it, the lease is released; prints
    the bench figure (seconds from SIGTERM to checkpoint written). Returns the run's id and
    the checkpoint's position."""
    assert codes == [143, 143], (codes, rank0[-3000:])
    (stopped,) = events(rank0, "terminated")
    run_id = events(rank0, "start")[0]["run_id"]
    (done, trained), newest = all_checkpoints(s3_store, MODEL, run_id)[0]
    assert newest == stopped["checkpoint"] and done == STOPPED_EPOCH - 1
    position = EpochPosition.from_dict(load_checkpoint(s3_store, newest).position)
    # The step in flight, then the one the vote took: at most two more.
    assert position.step == stopped["step"] <= signalled_at + 2 and position.trained == trained
    # No rank trained a step past the checkpoint: nothing is lost.
    assert highest_step(trace, STOPPED_EPOCH) == position.step
    print(f"{what}: SIGTERM at step {signalled_at}: checkpoint at step {position.step}, "
          f"written {stopped['seconds_since_sigterm']} s after SIGTERM")
    assert RunLeaseRecord.from_json(s3_store.get_bytes(ModelKeys(MODEL).lease(run_id))).released
    return run_id, position


@pytest.mark.parametrize("signalled", ["every pod", "one pod"])
def test_sigterm_at_a_random_step_checkpoints_there_and_the_next_job_resumes_there(
        signalled, s3_store, s3_endpoint, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    rendering = render(CONFIG)
    job = pytorchjob(rendering)
    cluster = local_cluster(rendering, tmp_path / "pods", s3_endpoint)
    run_buckets(cluster, logs)
    first_trace, second_trace = tmp_path / "trace-1", tmp_path / "trace-2"
    first_trace.mkdir()
    second_trace.mkdir()

    ranks = cluster.pytorchjob_processes(job)
    for rank in ranks:
        rank.env[SAMPLE_TRACE_ENV] = str(first_trace)
    procs = [r.start(logs) for r in ranks]
    try:
        # A random step of the second epoch (steps per epoch: see the plan below).
        target = random.Random().randint(3, 60)
        wait_for(lambda: highest_step(first_trace, STOPPED_EPOCH) >= target,
                 f"step {target} of epoch {STOPPED_EPOCH}", procs)
        for index in [0, 1] if signalled == "every pod" else [1]:
            procs[index].send_signal(signal.SIGTERM)
        # The steps traced by now: every rank was at most a step further when it got it.
        signalled_at = highest_step(first_trace, STOPPED_EPOCH)
        codes = after_grace_period(procs)
    finally:
        stop(procs)
    run_id, position = checkpointed_at_the_signal(
        s3_store, log_of(logs, ranks[0]), codes, first_trace, signalled_at,
        f"PyTorchJob, {signalled}")

    # The next job (the replaced one, once admitted again) resumes there and finishes.
    ranks = cluster.pytorchjob_processes(job)
    for rank in ranks:
        rank.env[SAMPLE_TRACE_ENV] = str(second_trace)
    procs = [r.start(logs) for r in ranks]
    try:
        assert [p.wait(timeout=WAIT_S * 2) for p in procs] == [0, 0], log_of(logs, ranks[0])
    finally:
        stop(procs)
    output = log_of(logs, ranks[0])
    resumed = [e for e in events(output, "resume") if e["run_id"] == run_id][-1]
    assert resumed["samples_trained"] == position.trained and resumed["epoch"] == STOPPED_EPOCH - 1
    first = [ids for rows in traced_steps(first_trace, STOPPED_EPOCH).values()
             for _, _, ids in rows]
    second = [ids for rows in traced_steps(second_trace, STOPPED_EPOCH).values()
              for _, _, ids in rows]
    counts = Counter(i for ids in first + second for i in ids)
    assert set(counts.values()) == {1}, "a sample of the stopped epoch was trained twice"
    assert len(counts) == position.plan.total, "a sample of the stopped epoch was skipped"
    assert [e["epoch"] for e in events(output, "epoch")] == list(range(STOPPED_EPOCH,
                                                                       EPOCHS + 1))


@pytest.fixture(scope="module")
def trainer(control_plane, tmp_path_factory):
    return trainjob_kit.installed(control_plane, tmp_path_factory.mktemp("trainer-v2"))


def test_a_trainjobs_torchrun_passes_sigterm_on_and_its_ranks_checkpoint_the_step(
        trainer, s3_store, s3_endpoint, tmp_path):
    cp, logs, trace = trainer, tmp_path / "logs", tmp_path / "trace"
    logs.mkdir()
    trace.mkdir()
    rendering = render({**trainjob_kit.CONFIG, **{k: CONFIG[k] for k in (
        "workers", "epochs", "batchSize", "checkpointEverySteps")},
        "namespace": "preemption-trainjob"})
    job = trainjob_kit.apply_stack(cp, rendering)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    cluster = local_cluster(rendering, tmp_path / "pods", s3_endpoint)
    run_buckets(cluster, logs)
    ranks = local_processes(cluster, trainjob_kit.scheduled_pods(cp, namespace, name, 2))
    for rank in ranks:
        rank.env[SAMPLE_TRACE_ENV] = str(trace)
    procs = [r.start(logs) for r in ranks]
    try:
        target = random.Random().randint(3, 60)
        wait_for(lambda: highest_step(trace, STOPPED_EPOCH) >= target,
                 f"step {target} of epoch {STOPPED_EPOCH}", procs)
        for proc in procs:  # the container's PID 1 only, as the kubelet signals it
            os.kill(proc.pid, signal.SIGTERM)
        signalled_at = highest_step(trace, STOPPED_EPOCH)
        codes = after_grace_period(procs)
    finally:
        stop(procs)
    checkpointed_at_the_signal(s3_store, log_of(logs, ranks[0]), codes, trace, signalled_at,
                               "TrainJob")
