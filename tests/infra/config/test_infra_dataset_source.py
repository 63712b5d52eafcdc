"""`datasetSource` never carries credentials: a URL with userinfo or a signed query is
refused unechoed, `datasetSourceSecret` passes such a URL through a Secret, and the
download's log lines and errors show URLs without userinfo or query."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra.config.keys import ConfigError
from tests.infra.infra_helpers import PUSHED, env_of, pytorchjob, secret_ref
from tests.infra.render import render
from trainer.contract.errors import IngestError
from trainer.data.download import download, redacted_url

EGRESS = {**PUSHED, "networkPolicy": "ingress-egress"}
SOURCE_ENV = "TRAINSTACK_DATASET_SOURCE"


@pytest.mark.parametrize("url, hidden", [
    ("https://alice:pw-7731@data.example.com/cifar.tar.gz", ("alice", "pw-7731")),
    ("https://tok3n-55aa@data.example.com/cifar.tar.gz", ("tok3n-55aa",)),
    (("https://bucket.s3.amazonaws.com/c.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
      "&X-Amz-Credential=AKIAXYZ%2F2026&X-Amz-Signature=9f8e7d"), ("AKIAXYZ", "9f8e7d")),
    ("https://acct.blob.core.windows.net/c/c.tar.gz?sv=2024&sig=Zm9vYmFy", ("Zm9vYmFy",)),
    ("https://example.com/c.tar.gz?token=abc123def", ("abc123def",)),
])
def test_credentials_in_the_dataset_url_are_refused_unechoed(url, hidden):
    with pytest.raises(ConfigError, match="trainstack:datasetSource .*datasetSourceSecret"
                       ) as raised:
        render({**PUSHED, "datasetSource": url})
    for text in hidden:
        assert text not in str(raised.value)
    assert "data.example.com" in str(raised.value) or "example.com" in str(raised.value) \
        or "windows.net" in str(raised.value) or "amazonaws.com" in str(raised.value)


def test_a_plain_query_is_fine():
    url = "https://example.com/files/cifar.tar.gz?download=1"
    rendering = render({**PUSHED, "datasetSource": url})
    assert url in rendering.objects["Job/trainstack-ingest-cifar10"]["spec"]["template"][
        "spec"]["containers"][0]["command"]


def _ingest(rendering):
    return rendering.objects["Job/trainstack-ingest-cifar10"]["spec"]["template"]["spec"]


def test_a_source_from_a_secret_reaches_the_ingest_job_by_reference_only():
    rendering = render({**EGRESS, "datasetSourceSecret": "cifar-mirror"})
    (container,) = _ingest(rendering)["containers"]
    assert env_of(container)[SOURCE_ENV] == secret_ref("cifar-mirror", SOURCE_ENV)
    command = container["command"]  # the URL stays in the env (issue 28 #5)
    assert command[command.index("--source-env") + 1] == SOURCE_ENV and "--source" not in command
    assert "cifar-10-python" not in str(rendering.objects)  # not the default URL either
    egress = rendering.objects["NetworkPolicy/trainstack-ingest"]["spec"]["egress"]
    assert sorted(p["port"] for rule in egress for p in rule.get("ports", [])
                  if rule.get("to") and "ipBlock" in rule["to"][0]) == [80, 443]
    # Another Secret (another dataset) is another run: a new job name.
    other = render({**EGRESS, "datasetSourceSecret": "cifar-mirror-2"})
    assert pytorchjob(rendering)["metadata"]["name"] != pytorchjob(other)["metadata"]["name"]


@pytest.mark.parametrize("config, key", [
    ({"datasetSource": "https://example.com/c.tar.gz", "datasetSourceSecret": "s"},
     "datasetSourceSecret"),
    ({"dataset": "digits", "datasetSourceSecret": "s"}, "datasetSourceSecret"),
    ({"datasetSourceSecret": "Not_A_Name"}, "datasetSourceSecret"),
])
def test_bad_source_secret_settings_name_the_key(config, key):
    with pytest.raises(ConfigError, match=rf"trainstack:{key}\b") as raised:
        render({**PUSHED, **config})
    assert raised.value.key == key


def test_redacted_urls_keep_host_and_path_only():
    assert redacted_url("https://alice:pw@host:8443/a/b.tar.gz?X-Amz-Signature=s#f") == \
        "https://host:8443/a/b.tar.gz"
    assert redacted_url("http://host/x") == "http://host/x"


class _Missing(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_download_errors_and_logs_show_no_credentials(tmp_path, caplog):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Missing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = (f"http://alice:pw-7731@127.0.0.1:{server.server_port}/c.tar.gz"
               "?X-Amz-Signature=9f8e7d")
        # INFO: what the ingest logs (urllib3 quotes request lines at DEBUG only).
        with caplog.at_level(logging.INFO), pytest.raises(IngestError) as raised:
            download(url, tmp_path / "c.tar.gz")
    finally:
        server.shutdown()
        server.server_close()
    shown = str(raised.value) + caplog.text
    assert "/c.tar.gz" in str(raised.value)
    for text in ("alice", "pw-7731", "9f8e7d"):
        assert text not in shown
