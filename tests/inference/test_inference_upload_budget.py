"""An upload budget smaller than one whole upload (inference.bodies): before, the server
started, and every upload bigger than the budget, and every chunked one (it reserves the
cap), was answered 503 "too many uploads right now; retry shortly" on an idle server,
forever. Now such settings are refused at start, naming both flags."""

import pytest

from inference.app import Settings
from inference.bodies import MULTIPART_OVERHEAD, UploadLimits
from trainer.errors import ConfigError


def test_a_budget_that_cannot_hold_one_upload_is_refused_at_start():
    with pytest.raises(ConfigError, match="upload_memory_mb"):
        Settings(store="/tmp/x", upload_memory_mb=5, max_upload_mb=10).upload_limits()
    with pytest.raises(ValueError):
        UploadLimits(max_bytes=10_000_000, memory_bytes=10_000_000)


def test_a_budget_that_holds_one_whole_upload_is_accepted():
    limits = Settings(store="/tmp/x").upload_limits()  # the defaults: 128 MiB, 10 MB
    assert limits.memory_bytes >= limits.body_cap
    UploadLimits(max_bytes=1000, memory_bytes=1000 + MULTIPART_OVERHEAD)
