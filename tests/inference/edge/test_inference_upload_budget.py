"""An upload budget smaller than one whole upload (inference.edge.bodies): before, the server
started, and every upload bigger than the budget, and every chunked one (it reserves the
cap), was answered 503 "too many uploads right now; retry shortly" on an idle server,
forever. Now such settings are refused at start, naming both flags."""

import pytest

from inference.app import Settings
from inference.edge.bodies import MULTIPART_OVERHEAD, UploadLimits
from trainer.contract.errors import ConfigError


def test_a_budget_that_cannot_hold_one_upload_is_refused_at_start():
    with pytest.raises(ConfigError, match="upload_memory_mb"):
        Settings(store="/tmp/x", upload_memory_mb=5, max_upload_mb=10).upload_limits()
    with pytest.raises(ValueError):
        UploadLimits(max_bytes=10_000_000, memory_bytes=10_000_000)


def test_a_budget_that_holds_one_whole_upload_is_accepted():
    limits = Settings(store="/tmp/x").upload_limits()  # the defaults: 128 MiB, 10 MB
    assert limits.memory_bytes >= limits.body_cap
    UploadLimits(max_bytes=1000, memory_bytes=1000 + MULTIPART_OVERHEAD)


def test_serve_with_a_big_max_upload_starts(monkeypatch, tmp_path):
    """`serve --max-upload-mb 200` is a valid command line, and the CLI has no way to set the
    upload memory budget (128 MiB). Before, it no longer started: exit 2, "upload_memory_mb
    128 is too small for max_upload_mb 200", naming a setting no flag reaches."""
    import socket

    import inference.app
    from inference.__main__ import parse_args, serve

    class Started(Exception):
        pass

    seen = {}

    def create_app(settings):
        seen["limits"] = settings.upload_limits()
        raise Started

    monkeypatch.setattr(inference.app, "create_app", create_app)
    args = parse_args(["serve", "--store", str(tmp_path), "--max-upload-mb", "200"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(Started):
            serve(args, sock)
    limits = seen["limits"]
    assert limits.max_bytes == 200_000_000 and limits.memory_bytes >= limits.body_cap
