"""A dataset URL with credentials (what `datasetSourceSecret` hands the ingest Job: basic
auth, a presigned URL) is downloaded and ingested, and neither its userinfo nor its query
appears in a log line or an error."""

from __future__ import annotations

import logging
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tests.trainer.cifar_fixtures import archive_bytes, make_batches
from tests.trainer.data.test_ingest import _image_tree
from trainer.contract.errors import IngestError
from trainer.data.ingest import ingest

SECRETS = ("alice", "pw-7731", "9f8e7d6c")
CREDENTIALS = "alice:pw-7731@"
QUERY = "?X-Amz-Credential=AKIA&X-Amz-Signature=9f8e7d6c"


class _Files(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self):
        body = self.files.get(self.path.split("?", 1)[0])  # a presigned URL's query: ignored
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def signed_base():
    """`http://alice:pw@127.0.0.1:PORT`: add a path and QUERY."""
    _Files.files = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{CREDENTIALS}127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _assert_hidden(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_cifar10_from_a_signed_url(local_store, signed_base, caplog):
    _Files.files["/data/cifar.tar.gz"] = archive_bytes(make_batches(per_class=1))
    local_store.ensure_buckets()
    with caplog.at_level(logging.INFO):
        ingest(local_store, "cifar10", f"{signed_base}/data/cifar.tar.gz{QUERY}")
    assert "127.0.0.1" in caplog.text and "/data/cifar.tar.gz" in caplog.text
    _assert_hidden(caplog.text)


def test_imagefolder_from_a_signed_url(local_store, signed_base, tmp_path, caplog):
    tree = _image_tree(tmp_path / "pets")
    with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname="pets")
    _Files.files["/data/pets.tar.gz"] = (tmp_path / "pets.tar.gz").read_bytes()
    local_store.ensure_buckets()
    with caplog.at_level(logging.INFO):
        assert ingest(local_store, "imagefolder", f"{signed_base}/data/pets.tar.gz{QUERY}"
                      ) == "datasets/imagefolder"
    _assert_hidden(caplog.text)


@pytest.mark.parametrize("dataset, path", [("cifar10", "/data/missing.tar.gz"),
                                           ("imagefolder", "/data/missing.tar.gz"),
                                           ("imagefolder", "/data/pets.rar")])
def test_errors_show_the_url_without_credentials(local_store, signed_base, dataset, path,
                                                 caplog):
    local_store.ensure_buckets()
    with caplog.at_level(logging.INFO), pytest.raises(IngestError) as raised:
        ingest(local_store, dataset, f"{signed_base}{path}{QUERY}")
    assert path in str(raised.value)
    _assert_hidden(str(raised.value) + caplog.text)
