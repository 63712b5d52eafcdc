"""Real training processes (the operator's env, 2 ranks) tracked by a real ``mlflow server``:
each epoch once, params, the registered version and its alias, artifacts; a run killed
and resumed with another world size stays one MLflow run; an MLflow outage never stops
training; without MLFLOW_TRACKING_URI mlflow is never imported."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.testkit import free_port
from tests.trainer.tracking_kit import client, latest_json_version, runs_of, steps_logged
from tests.trainer.trainer_procs import (
    REPO_ROOT,
    events,
    operator_env,
    run_trainer,
    start_trainer,
    trainer_env,
)
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.contract.reporting.mlflow_layout import (
    ALIAS,
    METRIC_KEYS,
    RUN_ID_TAG,
    VERSION_TAG,
    WORLD_SIZES_TAG,
)
from trainer.contract.reporting.progress import RunProgress

pytestmark = pytest.mark.slow

CONFIG = {"dataset": "digits", "model": "smallcnn", "epochs": 5, "batch_size": 16,
          "lr": 0.05, "seed": 3, "log_every": 20}
EPOCHS = list(range(1, CONFIG["epochs"] + 1))


@pytest.fixture
def job(tmp_path, s3_store, s3_env, mlflow_env):
    """The trainer's args and env (S3 store, tracking on) for this test's config."""
    s3_store.ensure_buckets()
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(CONFIG))
    return ["train", "--config", str(config_file), "--store", s3_store.url], \
        {**s3_env, **mlflow_env}


@pytest.fixture
def start_ranks():
    """Start the ranks of a job; whatever still runs when the test ends is killed."""
    started = []

    def start(args, env, world: int = 2):
        port = free_port()
        procs = [start_trainer(args, operator_env(rank, world, port, env))
                 for rank in range(world)]
        started.extend(procs)
        return procs

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@contextlib.contextmanager
def held(proc):
    """Rank 1 stopped (SIGSTOP): rank 0 blocks at its next collective (the process group's
    timeout is 600 s) while rank 0's MLflow thread goes on, so training cannot get ahead
    of what the test does to the server meanwhile."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


# Log lines of trainer.tracking.mlflow_run and trainer.tracking.tracker.
MLFLOW_RUN_CREATED = "created for run"
MLFLOW_FAILED = "training goes on, the epochs MLflow misses are logged"
MLFLOW_BACK = "answers again"


def read_until(proc, marker: str, lines: list[str]) -> None:
    """Rank 0's output up to (and with) the first line holding ``marker`` (maybe read
    already)."""
    if any(marker in line for line in lines):
        return
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return
    raise AssertionError(f"{marker!r} never came:\n" + "".join(lines[-40:]))


def read_until_epoch(proc, epoch: int, lines: list[str]) -> None:
    """Rank 0's output up to the structured line of ``epoch``."""
    for line in proc.stdout:
        lines.append(line)
        if any(e["epoch"] == epoch for e in events(line, "epoch")):
            return
    raise AssertionError(f"epoch {epoch} never came:\n" + "".join(lines[-40:]))


def finish(procs, lines: list[str]) -> str:
    """Wait for every rank; rank 0's whole output."""
    lines.extend(procs[0].stdout)
    for proc in procs:
        proc.wait(timeout=600)
    output = "".join(lines)
    assert [p.returncode for p in procs] == [0] * len(procs), output[-4000:]
    return output


def the_mlflow_run(mlflow_env, run_id: str):
    mlflow = client(mlflow_env["MLFLOW_TRACKING_URI"])
    runs = runs_of(mlflow, mlflow_env["MLFLOW_EXPERIMENT_NAME"], run_id)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return mlflow, runs[0]


def test_a_two_process_run_is_tracked_and_its_version_registered(job, s3_store, mlflow_env,
                                                                 start_ranks):
    args, env = job
    procs = start_ranks(args, env)
    output = finish(procs, [])
    run_id = events(output, "start")[0]["run_id"]
    version = events(output, "done")[0]["version"]
    cfg = TrainConfig.from_dict(CONFIG)

    mlflow, run = the_mlflow_run(mlflow_env, run_id)
    assert steps_logged(mlflow, run.info.run_id) == {key: EPOCHS for key in METRIC_KEYS}
    logged = {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, "test_acc")}
    assert logged == {e["epoch"]: e["test_acc"] for e in events(output, "epoch")}
    params = run.data.params
    assert {k: params[k] for k in cfg.to_dict()} == {k: str(v) for k, v in cfg.to_dict().items()}
    assert params["world_size"] == "2" and {"cpus", "memory_bytes", "gpus"} <= set(params)
    assert run.data.tags[RUN_ID_TAG] == run_id and run.data.tags[VERSION_TAG] == version

    current = mlflow.get_model_version_by_alias(cfg.model_name, ALIAS)
    assert current.tags[VERSION_TAG] == latest_json_version(s3_store, cfg.model_name) == version
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(artifact_uri=f"models:/{cfg.model_name}@{ALIAS}",
                               tracking_uri=mlflow_env["MLFLOW_TRACKING_URI"])
    keys = ModelKeys(cfg.model_name)
    for name in ("model.pt2", "meta.json", "curves.png", "confusion_matrix.png"):
        with open(f"{local}/{name}", "rb") as f:
            assert f.read() == s3_store.get_bytes(keys.version_file(version, name)), name

    progress = RunProgress.from_json(s3_store.get_bytes(keys.progress(run_id)))
    assert (progress.state, progress.version, progress.epoch) == ("published", version, 5)
    assert progress.mlflow_run_id == run.info.run_id


def test_a_killed_run_resumed_with_one_process_stays_one_mlflow_run(job, mlflow_env, start_ranks):
    args, env = job
    procs = start_ranks(args, env)
    lines: list[str] = []
    read_until(procs[0], "checkpoints/epoch-0002.pt", lines)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=30)
    run_id = events("".join(lines), "start")[0]["run_id"]

    second = run_trainer(args, trainer_env(env), timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-4000:]
    assert events(output, "resume")[0]["world_size"] == 1

    mlflow, run = the_mlflow_run(mlflow_env, run_id)
    assert steps_logged(mlflow, run.info.run_id) == {key: EPOCHS for key in METRIC_KEYS}
    assert run.data.tags[WORLD_SIZES_TAG] == "2,1"
    assert run.data.params["world_size"] == "2"


def down_once_the_run_exists(procs, lines: list[str], outage, until_epoch: int | None):
    """After epoch 1, once MLflow created the run: ``outage`` (the server hangs or is
    stopped) until rank 0 has finished ``until_epoch`` and its tracker has failed (None:
    until the job has ended). The moments are set by holding rank 1, not by timing."""
    read_until_epoch(procs[0], 1, lines)
    with contextlib.ExitStack() as down:
        with held(procs[1]):
            read_until(procs[0], MLFLOW_RUN_CREATED, lines)
            down.enter_context(outage)
        if until_epoch is None:
            return finish(procs, lines)
        read_until_epoch(procs[0], until_epoch, lines)
        with held(procs[1]):
            read_until(procs[0], MLFLOW_FAILED, lines)
            down.close()
    return finish(procs, lines)


def server_outage(server, kind: str):
    return server.paused() if kind == "hangs" else server.stopped()


@pytest.mark.parametrize("kind", ["hangs", "stops"])
def test_mlflow_down_mid_run_costs_no_epoch(job, mlflow_env, mlflow_server, start_ranks, kind):
    """The server hangs (SIGSTOP) or is stopped (and started again with its data) from
    after epoch 1 until epoch 3 has ended: training goes on, publishes, and the epochs
    MLflow missed are logged once it is back (the documented back-fill)."""
    args, env = job
    env = {**env, "TRAINSTACK_TRACKING_TIMEOUT_S": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    procs = start_ranks(args, env)
    output = down_once_the_run_exists(procs, [], server_outage(mlflow_server, kind), 3)
    run_id = events(output, "start")[0]["run_id"]
    assert output.count(MLFLOW_FAILED) == 1 and MLFLOW_BACK in output, output[-6000:]

    mlflow, run = the_mlflow_run(mlflow_env, run_id)
    assert steps_logged(mlflow, run.info.run_id) == {key: EPOCHS for key in METRIC_KEYS}
    current = mlflow.get_model_version_by_alias(TrainConfig.from_dict(CONFIG).model_name, ALIAS)
    assert current.tags[VERSION_TAG] == events(output, "done")[0]["version"]


def test_mlflow_down_to_the_end_misses_epochs_until_the_job_runs_again(job, mlflow_env,
                                                                        mlflow_server,
                                                                        start_ranks):
    """The documented gap: MLflow hangs from after epoch 1 until the job has ended. The job
    still trains and publishes; MLflow lacks the later epochs and has no registered version.
    Running the job again (it finds the run published) logs the missing epochs from the
    version's metrics.json, registers the version and moves the alias."""
    args, env = job
    env = {**env, "TRAINSTACK_TRACKING_TIMEOUT_S": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    procs = start_ranks(args, env)
    output = down_once_the_run_exists(procs, [], mlflow_server.paused(), None)
    run_id = events(output, "start")[0]["run_id"]
    version = events(output, "done")[0]["version"]
    mlflow, run = the_mlflow_run(mlflow_env, run_id)
    assert VERSION_TAG not in run.data.tags
    assert all(steps in ([], [1]) for steps in steps_logged(mlflow, run.info.run_id).values())

    again = run_trainer(args, trainer_env(env), timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    mlflow, run = the_mlflow_run(mlflow_env, run_id)
    assert steps_logged(mlflow, run.info.run_id) == {key: EPOCHS for key in METRIC_KEYS}
    assert run.data.tags[VERSION_TAG] == version
    model = TrainConfig.from_dict(CONFIG).model_name
    assert mlflow.get_model_version_by_alias(model, ALIAS).tags[VERSION_TAG] == version


NO_TRACKING_RUN = """
    import json, sys
    from trainer.contract.config import TrainConfig
    from trainer.store.s3 import open_store
    from trainer.run.train import run_training

    store = open_store(sys.argv[1])
    store.ensure_buckets()
    cfg = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=64, seed=5)
    version = run_training(cfg, store)
    print(json.dumps({"version": version,
                      "mlflow": sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")}))
"""


@pytest.mark.parametrize("tracking", [False, True])
def test_without_the_variable_mlflow_is_never_imported(tmp_path, tracking):
    """A whole run in one process; with the variable (an unreachable server) the same
    check does see mlflow, so it can fail."""
    env = trainer_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking:
        env.update({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(NO_TRACKING_RUN),
                             str(tmp_path / "store")], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["version"]
    assert bool(outcome["mlflow"]) is tracking, outcome["mlflow"][:5]
