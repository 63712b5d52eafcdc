"""`make demo` as a newcomer runs it (issue 24): the Makefile itself, on the digits demo.

Wrong knobs and a taken port stop it with one line before anything starts; it serves the
model it just trained, not the newest of the shared store; Ctrl-C during training ends with
one line (no torchrun traceback), and the run's progress record says it was interrupted.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.inference.inference_helpers import free_port
from tests.inference.modelkit import publish_version
from trainer.store import open_store

ROOT = Path(__file__).resolve().parents[1]
DIGITS = "smallcnn-digits"

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or not (ROOT / ".venv" / ".runtime-installed").exists(),
    reason="needs make and the project's .venv (`make test` sets it up)")


def user_env() -> dict[str, str]:
    """The environment of a user at a shell: under `make test` the parent make's own
    variables (MAKELEVEL: `make[1]: ***` instead of `make: ***`; MAKEFLAGS: its jobserver)
    would reach the `make demo` under test."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}


def run_make(*knobs: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "demo", *knobs], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=user_env())


def start_make(log: Path, *knobs: str) -> subprocess.Popen:
    """`make demo` in a session of its own: a signal to its group is a Ctrl-C at a terminal."""
    return subprocess.Popen(["make", "--no-print-directory", "demo", *knobs], cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=user_env())


def wait_for(check, what: str, proc: subprocess.Popen, log: Path, deadline_s: float = 240):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{what}: not seen; make's output:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def own_lines(result: subprocess.CompletedProcess) -> list[str]:
    """What the recipe printed, without make's own `make: *** ... Error` line."""
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line and not line.startswith("make:")]


@pytest.mark.parametrize("knob, said", [
    ("DATASET=mnist", ("DATASET='mnist' is not a dataset `make demo` trains; allowed: "
                       "cifar10, imagefolder, digits")),
    ("DATASET=synthetic", "DATASET='synthetic' is not a dataset"),
    ("DATASET=imagefolder", "DATASET=imagefolder needs SOURCE="),
    ("MODEL=resnet", "MODEL='resnet': allowed: resnet18, resnet18-imagenet, smallcnn"),
    ("EPOCHS=ten", "EPOCHS='ten': allowed: an integer >= 1"),
    ("BATCH_SIZE=0", "BATCH_SIZE='0': allowed: an integer >= 1"),
    ("LR=fast", "LR='fast': allowed: a number > 0"),
    ("PORT=70000", "PORT='70000': allowed: an integer from 0 to 65535"),
    ("SERVE=maybe", "SERVE='maybe': allowed: yes, no"),
])
def test_a_wrong_knob_fails_with_one_line_before_anything_starts(tmp_path, knob, said):
    store = tmp_path / "store"
    result = run_make(knob, f"DEMO_STORE={store}")
    assert result.returncode != 0
    lines = own_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"make demo: {said}"), lines
    assert not store.exists()  # no bucket made, nothing trained


def test_a_port_in_use_stops_the_demo_before_training(tmp_path):
    store = tmp_path / "store"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_make(f"PORT={port}", f"DEMO_STORE={store}")
    assert result.returncode != 0
    assert len(own_lines(result)) == 1 and f"127.0.0.1:{port} is in use" in own_lines(result)[0]
    assert not store.exists()


def test_the_demo_serves_the_model_it_just_trained_on_the_host_it_names(tmp_path):
    store_dir = tmp_path / "store"
    # Another dataset's demo left a model in the shared store, with a newer version name.
    other = publish_version(open_store(str(store_dir)), "29991231T000000Z-0ther")
    port, log = free_port(), tmp_path / "make.log"
    proc = start_make(log, "EPOCHS=1", f"PORT={port}", f"DEMO_STORE={store_dir}")
    try:
        wait_for(lambda: f"now serving {DIGITS} version" in log.read_text(),
                 f"{DIGITS} served", proc, log)
        text = log.read_text()
        assert f"web app listening on http://127.0.0.1:{port}/" in text
        assert other not in text
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30).status_code == 200
    finally:
        stop(proc)


def test_ctrl_c_during_training_ends_with_one_line_and_the_run_shows_as_interrupted(tmp_path):
    store_dir, log = tmp_path / "store", tmp_path / "make.log"
    progress = store_dir / "models" / DIGITS / "progress"

    def one_epoch_done() -> bool:
        records = list(progress.glob("*.json"))
        return bool(records) and json.loads(records[0].read_text())["epoch"] >= 1

    proc = start_make(log, "EPOCHS=400", "SERVE=no", f"PORT={free_port()}",
                      f"DEMO_STORE={store_dir}")
    try:
        wait_for(one_epoch_done, "the first epoch's progress record", proc, log)
    finally:
        code = stop(proc)
    text = log.read_text()
    assert code != 0
    assert "Traceback" not in text and "SignalException" not in text, text[-4000:]
    ending = text[text.rindex('"event": "epoch"'):].splitlines()[1:]
    assert len(ending) <= 8, ending  # per rank "interrupted", the launcher's line, make's
    assert any("training interrupted" in line and "resume" in line for line in ending)
    record = json.loads(next(progress.glob("*.json")).read_text())
    assert record["state"] == "interrupted" and record["epoch"] >= 1
