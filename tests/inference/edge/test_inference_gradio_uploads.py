"""Issue 28 #3: Gradio's own upload route (/gradio_api/upload) has the limits of /predict.

Uploads keep the upload folder under its cap at once (not at the next sweep: the sweep
here runs once an hour); bodies in flight share the memory budget of /predict, so uploads
beyond it are refused at once (503); a stalled upload is dropped (408) and leaves nothing
on disk; a body declared bigger than the cap is refused before it is read (413); an API
call's image sent as a data: URL (which Gradio writes to its folder and never deletes)
leaves nothing behind. The server runs as its own process with its own upload folder
(GRADIO_TEMP_DIR): its size is this app's alone.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.inference.edge.test_inference_slow_uploads import server, status_of
from tests.inference.inference_helpers import V1
from tests.inference.modelkit import png, publish_version, solid

MB = 10**6
UPLOAD_BYTES = int(2.5 * MB)  # each file
MAX_UPLOAD_MB = 3  # the app's limit for one file
BUDGET_MB = 8  # bodies in flight together (MiB): three of these uploads, not four
CACHE_MB = 10  # uploads kept on disk: three of them
STALLED_BYTES = 3 * MB  # what a stalled upload declares (and so reserves)


def folder_bytes(root: Path) -> int:
    """The size of every file under ``root``; files and folders come and go meanwhile."""
    total = 0
    for folder, _, names in os.walk(root):  # os.walk skips folders that vanish
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # Gradio renames its temp files
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def upload(base: str, name: str) -> httpx.Response:
    data = os.urandom(UPLOAD_BYTES)  # unique: Gradio names a file by its content's hash
    return httpx.post(f"{base}/gradio_api/upload", files={"files": (name, data)}, timeout=120)


def start_stalled_upload(port: int, declared: int, sent: int) -> socket.socket:
    """Headers of a multipart upload to Gradio's route and ``sent`` bytes; then nothing."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                 b"Content-Length: %d\r\n\r\n" % declared + b"--xyz\r\nContent-Disposition: "
                 b"form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n" + b"\0" * sent)
    sock.settimeout(60)  # the answer is due after the idle timeout (2 s); none: fail
    return sock


def test_uploads_to_gradio_keep_its_folder_under_the_cap_at_once(local_store, tmp_path,
                                                                 monkeypatch):
    publish_version(local_store, V1)
    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    peak, done = [0], threading.Event()

    def watch() -> None:  # the folder's largest size while the uploads run
        while not done.is_set():
            peak[0] = max(peak[0], folder_bytes(folder))

    with server(local_store.url, tmp_path, max_upload_mb=MAX_UPLOAD_MB,
                upload_memory_mb=BUDGET_MB, upload_cache_mb=CACHE_MB,
                upload_cache_sweep_s=3600) as (_port, base, _pid):
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with ThreadPoolExecutor(2) as pool:  # two at a time: the budget takes them all
            answers = list(pool.map(lambda i: upload(base, f"up-{i}.png"), range(12)))
        after = folder_bytes(folder)  # at once: the hourly sweep has not run
        done.set()
        watcher.join()
        assert [r.status_code for r in answers] == [200] * 12, [r.text for r in answers]
        kept = {path.name for path in folder.rglob("up-*.png")}
        assert "up-11.png" in kept and "up-0.png" not in kept  # the oldest go first
    print(f"12 uploads of {UPLOAD_BYTES / MB:g} MB to /gradio_api/upload: upload folder "
          f"{after / MB:.1f} MB after, {peak[0] / MB:.1f} MB at most (cap {CACHE_MB} MB)")
    # Uncapped until the sweep, the folder held all of them (30 MB).
    assert after <= CACHE_MB * MB
    assert peak[0] <= (CACHE_MB + 2 * BUDGET_MB) * MB


def test_gradio_uploads_share_the_budget_and_stalled_ones_are_dropped(local_store, tmp_path,
                                                                       monkeypatch):
    publish_version(local_store, V1)
    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    with server(local_store.url, tmp_path, max_upload_mb=MAX_UPLOAD_MB,
                upload_memory_mb=BUDGET_MB, upload_idle_timeout_s=2.0) as (port, base, _pid):
        before = folder_bytes(folder)
        # Two stalled uploads hold 6 MB of the 8 MiB budget: a third upload does not fit.
        stalled = [start_stalled_upload(port, STALLED_BYTES, sent=500_000) for _ in range(2)]
        refused = upload(base, "refused.png")
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] and "retry shortly" in refused.json()["detail"]
        # Before: no answer at all, each body held for as long as its client kept quiet.
        assert [status_of(sock) for sock in stalled] == [408, 408]
        assert folder_bytes(folder) == before  # no half-written file left in the folder
        assert upload(base, "taken.png").status_code == 200  # the budget is free again
        metrics = httpx.get(f"{base}/metrics").text
        assert "trainstack_upload_memory_reserved_bytes 0.0" in metrics
        assert 'trainstack_http_requests_total{endpoint="ui",status="408"}' \
            in metrics
        # Refused before a byte of it is read: a body declared over the cap.
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                     b"Content-Length: 999999999\r\n\r\n")
        sock.settimeout(60)
        assert status_of(sock) == 413


def predict_data_url(base: str, colour: str, seed: int) -> str:
    """The app's Gradio API called with the image inline (a data: URL): the label."""
    image = solid(colour, (40, 30))
    image.putpixel((0, 0), (seed, seed, seed))  # a file of its own each time
    url = "data:image/png;base64," + base64.b64encode(png(image)).decode()
    started = httpx.post(f"{base}/gradio_api/call/predict", timeout=60, json={
        "data": [{"url": url, "path": None, "meta": {"_type": "gradio.FileData"}}]})
    with httpx.stream("GET", f"{base}/gradio_api/call/predict/{started.json()['event_id']}",
                      timeout=60) as events:
        text = "".join(events.iter_text())
    assert "event: complete" in text, text
    return text


def test_images_sent_inline_to_gradios_api_leave_no_file_behind(local_store, tmp_path,
                                                                  monkeypatch):
    publish_version(local_store, V1)
    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    with server(local_store.url, tmp_path) as (_port, base, _pid):
        for seed, colour in enumerate(("red", "green", "blue")):
            assert f'"label": "{colour}"' in predict_data_url(base, colour, seed)
        # Before: one file per call, in no sweep's list: still there after shutdown.
        assert folder_bytes(folder) == 0, [str(p) for p in folder.rglob("*")]


TOKEN = "gradio-uploads-token-0123456789abcdef0123"


def test_with_a_token_callers_not_signed_in_cannot_take_the_users_budget(local_store,
                                                                          tmp_path,
                                                                          monkeypatch):
    """Bodies are read before Gradio checks its login: without a guest budget of their own,
    two stalled uploads from nobody in particular held the budget and a signed-in user's
    upload got 503."""
    publish_version(local_store, V1)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with server(local_store.url, tmp_path, max_upload_mb=MAX_UPLOAD_MB,
                upload_memory_mb=BUDGET_MB, upload_idle_timeout_s=2.0,
                auth_token=TOKEN) as (port, base, _pid):
        stalled = [start_stalled_upload(port, STALLED_BYTES, sent=500_000) for _ in range(2)]
        with httpx.Client(base_url=base, timeout=120) as user:
            login = user.post("/login", data={"username": "me", "password": TOKEN})
            assert login.status_code == 200, login.text
            answer = user.post("/gradio_api/upload",
                               files={"files": ("mine.png", os.urandom(UPLOAD_BYTES))})
            assert answer.status_code == 200, answer.text
        # A guest's big body: sign in first (before reading it), not a slot of the budget.
        assert [status_of(sock) for sock in stalled] == [401, 401]
        anonymous = httpx.post(f"{base}/gradio_api/upload", timeout=60,
                               files={"files": ("x.png", os.urandom(UPLOAD_BYTES))})
        assert anonymous.status_code == 401 and "sign in" in anonymous.json()["detail"]
