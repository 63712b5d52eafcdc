"""Issue 28 #8: one URL rule for a dataset download, so the stack's `datasetSource` and the
trainer's ingest cannot disagree: what the stack takes the ingest downloads, what one
refuses the other refuses, each with one line that shows no credentials."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from infra.config.keys import ConfigError
from tests.infra.infra_helpers import PUSHED
from tests.infra.render import render
from tests.trainer.cifar_fixtures import archive_bytes, make_batches
from trainer.contract.errors import IngestError
from trainer.contract.layout import cifar10_key
from trainer.data.download import fetch
from trainer.data.ingest import ingest

HIDDEN = ("u5er", "pa55", "w0rd")  # the pieces of a password that must never be shown
REFUSED = {
    "port out of range": "http://127.0.0.1:99999/c.tar.gz",
    "port not a number": "http://127.0.0.1:8o/c.tar.gz",
    "port zero": "http://127.0.0.1:0/c.tar.gz",
    "unbalanced bracket": "http://[::1/c.tar.gz",
    "IPv4 in brackets": "http://[127.0.0.1]/c.tar.gz",
    "no host": "http:///c.tar.gz",
    "a space": "http://127.0.0.1/c tar.gz",
    "a control character": "http://127.0.0.1/c\ttar.gz",
    "another scheme": "ftp://127.0.0.1/c.tar.gz",
    "unencoded '#' in a password": "http://u5er:pa55#w0rd@127.0.0.1/c.tar.gz",
    "unencoded '/' in a password": "http://u5er:pa55/w0rd@127.0.0.1/c.tar.gz",
    "bad port after credentials": "https://u5er:pa55w0rd@127.0.0.1:99999/c.tar.gz",
}


class _Archive(BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b""
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def archive_server():
    _Archive.body, _Archive.hits = archive_bytes(make_batches(per_class=1)), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Archive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], _Archive
    server.shutdown()
    server.server_close()


def _one_line_without_credentials(text: str) -> None:
    assert "\n" not in text, text
    for piece in HIDDEN:
        assert piece not in text, text


@pytest.mark.parametrize("url", REFUSED.values(), ids=REFUSED.keys())
def test_the_stack_refuses_with_the_config_error(url):
    with pytest.raises(ConfigError) as raised:
        render({**PUSHED, "datasetSource": url})
    assert raised.value.key == "datasetSource"
    message = str(raised.value)
    assert message.startswith("invalid config trainstack:datasetSource ")
    assert "allowed: " in message and "http" in message
    _one_line_without_credentials(message)


@pytest.mark.parametrize("url", REFUSED.values(), ids=REFUSED.keys())
def test_the_ingest_refuses_the_same_before_connecting(url, tmp_path, archive_server):
    _, handler = archive_server
    before = list(handler.hits)
    with pytest.raises(IngestError) as raised:
        fetch(url, tmp_path / "c.tar.gz")
    message = str(raised.value)
    assert message.startswith("source ") and "http" in message
    _one_line_without_credentials(message)
    assert handler.hits == before


@pytest.mark.parametrize("scheme", ["HTTP", "Http", "http"])
def test_what_the_stack_takes_the_ingest_downloads(scheme, archive_server, local_store):
    port, handler = archive_server
    url = f"{scheme}://127.0.0.1:{port}/data/c.tar.gz?download=1"
    rendering = render({**PUSHED, "datasetSource": url})
    command = rendering.objects["Job/trainstack-ingest-cifar10"]["spec"]["template"][
        "spec"]["containers"][0]["command"]
    source = command[command.index("--source") + 1]
    local_store.ensure_buckets()
    assert ingest(local_store, "cifar10", source, expected_md5=None) == cifar10_key()
    assert local_store.get_bytes(cifar10_key()) == handler.body
    assert handler.hits[-1] == "/data/c.tar.gz?download=1"
