"""Issue 24: an offline download fails fast (no retries of a failed name lookup), says one
short line per retry otherwise, and the CIFAR-10 error suggests a local copy. Nothing here
dials outside 127.0.0.0/8: the name lookup of a `.invalid` host is answered here."""

from __future__ import annotations

import logging
import socket

import pytest

from trainer.contract.errors import IngestError
from trainer.data import download
from trainer.data.ingest import ingest

UNRESOLVABLE = "http://cifar.example.invalid/cifar-10-python.tar.gz"


@pytest.fixture
def no_dns(monkeypatch):
    """Names under .invalid fail to resolve (RFC 6761) without asking any DNS server."""
    real = socket.getaddrinfo
    asked = []

    def getaddrinfo(host, *args, **kwargs):
        if str(host).endswith(".invalid"):
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.fixture
def refused_url():
    """A URL on 127.0.0.1 whose port refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/cifar-10-python.tar.gz"


@pytest.fixture
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(download.time, "sleep", slept.append)
    return slept


def test_a_name_that_does_not_resolve_fails_at_once(local_store, no_dns, no_sleep, caplog,
                                                    monkeypatch):
    local_store.ensure_buckets()
    monkeypatch.setattr("trainer.data.ingest.DEFAULT_CIFAR10_URL", UNRESOLVABLE)
    with caplog.at_level(logging.WARNING), pytest.raises(IngestError) as err:
        ingest(local_store, "cifar10")
    message = str(err.value)
    assert no_dns == ["cifar.example.invalid"]  # asked once: no retry
    assert not no_sleep and not caplog.records
    assert "cannot resolve cifar.example.invalid" in message
    assert "CIFAR10_SOURCE=path/to/cifar-10-python.tar.gz" in message
    assert len(message) < 400 and "\n" not in message


def test_a_refused_connection_is_retried_with_one_short_line_each(local_store, refused_url,
                                                                 no_sleep, caplog):
    local_store.ensure_buckets()
    with caplog.at_level(logging.WARNING), pytest.raises(IngestError) as err:
        ingest(local_store, "cifar10", refused_url)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == download.STREAM_ATTEMPTS - 1 == len(no_sleep)
    assert all(len(w) < 200 and "connection refused" in w for w in warnings), warnings
    assert "Retry(" not in caplog.text  # urllib3's own long retry lines
    assert "connection refused" in str(err.value)
    assert "CIFAR10_SOURCE=path/to/cifar-10-python.tar.gz" in str(err.value)
