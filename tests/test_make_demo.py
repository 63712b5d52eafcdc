"""`make demo` as a newcomer runs it (issues 24, 28): the Makefile itself.

Wrong knobs and a taken port stop it with one line before anything starts; it serves the
model it just trained, not the newest of the shared store; Ctrl-C during training ends with
one line (no torchrun traceback), and the run's progress record says it was interrupted;
a second run says in words that there is nothing to train; two image folders are two
datasets, never served for each other; `make help` lists every target and knob, and
`make clean` keeps the demo store. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.inference.inference_helpers import free_port
from tests.inference.modelkit import png, publish_version, solid
from tests.trainer.image_trees import image_tree
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
    # Issue 28 #14: before, SOURCE without DATASET trained digits without a word.
    ("SOURCE=photos", "SOURCE='photos' is not used by DATASET=digits"),
    ("CIFAR10_SOURCE=c.tar.gz", "SOURCE='c.tar.gz' is not used by DATASET=digits"),
    ("DATASET_NAME=pets", "DATASET_NAME='pets' names an image folder; DATASET=digits"),
    ("SEED=-1", "SEED='-1': allowed: an integer >= 0"),
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


def test_a_second_run_says_in_words_that_it_has_nothing_to_train(tmp_path):
    """Issue 28 #14: before, the second run printed only JSON ({"event": "finished"})."""
    knobs = ("EPOCHS=1", "SERVE=no", f"PORT={free_port()}", f"DEMO_STORE={tmp_path / 'store'}")
    first = run_make(*knobs, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_make(*knobs, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    said = [line for line in own_lines(second) if "Nothing to train" in line]
    assert len(said) == 1, own_lines(second)[-10:]
    assert f"as version {json_field(first, 'version')} of {DIGITS}" in said[0]
    assert "To train again, change a setting or the data (make demo: SEED=1" in said[0]


def json_field(result: subprocess.CompletedProcess, key: str) -> str:
    """``key`` of the last {"event": "done", ...} line make printed."""
    done = [line for line in (result.stdout + result.stderr).splitlines()
            if '"event": "done"' in line][-1]
    return json.loads(done[done.index("{"):])[key]


def test_two_image_folders_are_two_datasets_and_neither_is_served_for_the_other(tmp_path):
    """Issue 28 #13, as reported: train a 3-class folder, then a 2-class one (SERVE=no),
    then the first again. Before, both were `imagefolder`: the third run served the 2-class
    model as the first one's, and a green square was a class of the other dataset."""
    colours = image_tree(tmp_path / "colours", classes=("cat", "dog", "bird"))
    pets = image_tree(tmp_path / "pets", classes=("cat", "dog"), seed=1)
    store = tmp_path / "store"
    knobs = ("DATASET=imagefolder", "MODEL=smallcnn", "EPOCHS=1", "BATCH_SIZE=8",
             f"PORT={free_port()}", f"DEMO_STORE={store}")
    first = run_make(*knobs, f"SOURCE={colours}", "SERVE=no", timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    colours_version = json_field(first, "version")
    second = run_make(*knobs, f"SOURCE={pets}", "SERVE=no", timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(p.name for p in (store / "models").iterdir()) == [
        "smallcnn-imagefolder-colours", "smallcnn-imagefolder-pets"]
    # Another folder that happens to have the same name is refused, nothing replaced.
    other = image_tree(tmp_path / "elsewhere" / "colours", classes=("cat", "dog"), seed=2)
    refused = run_make(*knobs, f"SOURCE={other}", "SERVE=no", timeout=600)
    assert refused.returncode != 0
    assert f"{other} is another folder, so it is another dataset" in refused.stderr
    port, log = free_port(), tmp_path / "make.log"
    proc = start_make(log, *knobs[:-2], f"DEMO_STORE={store}", f"SOURCE={colours}",
                      f"PORT={port}")
    try:
        served = f"now serving smallcnn-imagefolder-colours version {colours_version}"
        wait_for(lambda: served in log.read_text(), "the colours model served", proc, log)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/readyz", timeout=30).json()["model"] == \
            "smallcnn-imagefolder-colours"
        answer = httpx.post(f"{base}/predict", timeout=60, files={
            "file": ("green.png", png(solid("green", (32, 32))), "image/png")}).json()
        assert set(answer["probabilities"]) == {"bird", "cat", "dog"}, answer
        assert answer["model_version"] == colours_version
    finally:
        stop(proc)


def makefile_names() -> tuple[list[str], list[str]]:
    """The Makefile's .PHONY targets a user runs, and its knobs (``NAME ?= default``)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")  # continued lines
    internal = {"chromium", "strace", "prometheus", "buildah", "torch-choice"}  # prerequisites
    targets = {t for line in text.splitlines() if line.startswith(".PHONY:")
               for t in line.split(":", 1)[1].split()} - internal - {"help"}
    knobs = re.findall(r"^([A-Z][A-Z0-9_]*) \?=", text, flags=re.MULTILINE)
    return sorted(targets), knobs


def test_make_help_lists_every_target_and_every_knob_with_its_default():
    """Issue 28 #19: before, `make help` listed 5 targets and no knob."""
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, check=True,
                            capture_output=True, text=True, env=user_env())
    targets, knobs = makefile_names()
    missing = [t for t in targets if not re.search(rf"^make {re.escape(t)}\b", result.stdout,
                                                   flags=re.MULTILINE)]
    assert not missing, result.stdout
    assert not [k for k in knobs if f"{k}=" not in result.stdout], result.stdout
    for knob_line in ("DATASET=digits", "MODEL=smallcnn", "EPOCHS=12", "PORT=7860",
                      "SERVE=yes", "SEED=0", "HOST=127.0.0.1"):
        assert f"  {knob_line} " in result.stdout


def test_make_clean_keeps_the_demo_store_and_clean_store_removes_it(tmp_path):
    """Issue 28 #19: before, `make clean` deleted demo-store (every model) without a word.
    Run on a directory of its own (-C): the project's own .venv stays untouched."""
    for folder in (".venv", ".venv-mlflow", ".pytest_cache", "demo-store/models/m"):
        (tmp_path / folder).mkdir(parents=True)
    make = ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path)]
    clean = subprocess.run([*make, "clean"], capture_output=True, text=True, check=False,
                           env=user_env())
    assert clean.returncode == 0, clean.stderr
    assert not (tmp_path / ".venv").exists() and not (tmp_path / ".pytest_cache").exists()
    assert (tmp_path / "demo-store" / "models" / "m").is_dir()
    assert f"keeping {tmp_path}/demo-store" in clean.stdout
    assert "make clean-store removes it" in clean.stdout
    wiped = subprocess.run([*make, "clean-store"], capture_output=True, text=True, check=False,
                           env=user_env())
    assert wiped.returncode == 0, wiped.stderr
    assert f"removing {tmp_path}/demo-store: every dataset and model" in wiped.stdout
    assert not (tmp_path / "demo-store").exists()
