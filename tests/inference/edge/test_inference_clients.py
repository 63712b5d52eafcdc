"""The app as its users reach it: gradio_client, and `python -m inference serve`."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.inference.inference_helpers import V1, free_port, wait_until
from tests.inference.modelkit import MODEL_NAME, png, publish_version, solid


def test_gradio_client_calls_predict(app_v1, tmp_path):
    from gradio_client import Client, handle_file

    base, _ = app_v1
    image = tmp_path / "green.png"
    image.write_bytes(png(solid("green", (200, 120), "RGBA")))
    client = Client(base + "/", verbose=False)
    label, answered_by = client.predict(handle_file(str(image)), api_name="/predict")
    assert label["label"] == "green"
    assert {c["label"] for c in label["confidences"]} == {"red", "green", "blue"}
    assert V1 in answered_by
    assert V1 in client.predict(api_name="/status")
    metrics = httpx.get(f"{base}/metrics").text
    assert 'predicted_class="green",source="ui"} 1.0' in metrics


@pytest.mark.parametrize("how", ["flags", "env"])
def test_python_m_inference_serve(local_store, tmp_path, how):
    publish_version(local_store, V1)
    publish_version(local_store, "20200101T000000Z", name="older-model")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "inference", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--poll-seconds", "1", "--torch-threads", "1"]
    if how == "flags":
        cmd += ["--store", local_store.url, "--model-name", MODEL_NAME]
    else:  # what the Deployment sets; no model name: the newest published model wins
        env.update(TRAINSTACK_STORE=local_store.url)
        env.pop("TRAINSTACK_MODEL_NAME", None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{base}/readyz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, "the server to load the model", every=0.3)
        r = httpx.post(f"{base}/predict", files={"file": ("b.png", png(solid("blue")))})
        assert r.json() == {**r.json(), "prediction": "blue", "model_version": V1}
        assert httpx.get(f"{base}/readyz").json()["model"] == MODEL_NAME
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "web app listening on http://127.0.0.1" in (tmp_path / "serve.log").read_text()


def test_serve_without_store_says_how_to_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRAINSTACK_STORE"}
    r = subprocess.run([sys.executable, "-m", "inference", "serve"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2
    assert "TRAINSTACK_STORE" in r.stderr
