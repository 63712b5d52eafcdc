"""Issue 24: `python -m inference serve` documents --host/--port and fails at once, before
loading anything, when its port is taken."""

from __future__ import annotations

import socket
import subprocess
import sys

from inference.__main__ import parse_args


def test_help_gives_host_and_port_with_their_defaults(capsys):
    try:
        parse_args(["serve", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "--host HOST address to listen on" in text and "[0.0.0.0]" in text
    assert "--port PORT TCP port" in text and "[7860]" in text


def test_a_port_in_use_fails_at_once_before_any_model_is_loaded(local_store, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "inference", "serve", "--store", str(local_store.root),
             "--host", "127.0.0.1", "--port", str(port)],
            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"127.0.0.1:{port} is in use" in errors[0], result.stderr
    assert "serving models" not in result.stderr and "Traceback" not in result.stderr
