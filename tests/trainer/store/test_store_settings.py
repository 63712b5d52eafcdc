"""How an S3 store is reached: TLS (s3s://), region, bucket prefix, endpoint syntax.

Real servers on 127.0.0.1: the session's moto server (plain HTTP) and, for TLS, moto's
own WSGI app behind a TLS listener with a certificate this test makes.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import threading

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.testkit import free_port
from trainer.cli import main as trainer_main
from trainer.contract.errors import ConfigError, StoreError
from trainer.contract.layout import BUCKET_NAME_RULES, BUCKETS, bucket_name_problem, bucket_names
from trainer.store import S3Store, open_store


def raw_buckets(store: S3Store) -> set[str]:
    """The store's own bucket names, as the server lists them."""
    client = getattr(store.client, "_client", store.client)
    return {b.name for b in client.list_buckets()}


@pytest.mark.parametrize(("name", "problem"), [
    ("ab", "2 characters"),
    ("a" * 64, "64 characters"),
    ("Team-models", "a character other than"),
    ("team_models", "a character other than"),
    ("-teammodels", "start and end with a letter or digit"),
    ("team..models", "'..'"),
    ("team.-models", "'.-'"),
    ("team-.models", "'-.'"),
    ("192.168.0.1", "IP address"),
    ("xn--models", "reserves"),
    ("sthree-models", "reserves"),
    ("models-s3alias", "reserves"),
    ("models--x-s3", "reserves"),
])
def test_bucket_name_rules(name, problem):
    assert problem in bucket_name_problem(name)


def test_valid_prefixes_make_valid_names():
    assert bucket_names() == {b: b for b in BUCKETS}
    assert bucket_names("acme-ml-")["models"] == "acme-ml-models"
    assert bucket_names("acme.ml.")["metrics"] == "acme.ml.metrics"
    for prefix in ("Acme-", "acme_", "-acme", "acme..", "a" * 56):
        with pytest.raises(ValueError, match="not a valid S3 bucket name") as err:
            bucket_names(prefix)
        assert BUCKET_NAME_RULES in str(err.value)


def test_a_prefixed_store_keeps_logical_keys_and_its_own_buckets(s3_store, s3_endpoint):
    team = S3Store(s3_endpoint, bucket_prefix="team-a-")
    assert sorted(team.ensure_buckets()) == ["team-a-datasets", "team-a-metrics", "team-a-models"]
    assert team.ensure_buckets() == []  # idempotent
    assert raw_buckets(team) == {"team-a-datasets", "team-a-models", "team-a-metrics"}
    team.put_bytes("models/m-d/latest.json", b'{"version": "v1"}')
    assert team.get_bytes("models/m-d/latest.json") == b'{"version": "v1"}'
    assert team.exists("models/m-d/latest.json")
    assert team.list("models/") == ["models/m-d/latest.json"]  # logical keys back
    raw = team.client._client
    assert raw.stat_object("team-a-models", "m-d/latest.json").size == 17
    # An unprefixed store on the same server sees none of it.
    assert s3_store.list("models/") == []
    assert "models" not in raw_buckets(s3_store)


def test_the_prefix_comes_from_the_environment(s3_store, s3_endpoint, monkeypatch):
    monkeypatch.setenv("TRAINSTACK_BUCKET_PREFIX", "env-")
    store = open_store(f"s3://{s3_endpoint}")
    assert store.bucket_names["datasets"] == "env-datasets"
    store.ensure_buckets()
    assert raw_buckets(store) >= {"env-datasets", "env-models", "env-metrics"}
    monkeypatch.setenv("TRAINSTACK_BUCKET_PREFIX", "Env_")
    with pytest.raises(ConfigError, match="TRAINSTACK_BUCKET_PREFIX='Env_'.*'Env_datasets'") as err:
        open_store(f"s3://{s3_endpoint}")
    assert err.value.key == "TRAINSTACK_BUCKET_PREFIX"


def test_buckets_command_names_the_prefixed_buckets(s3_store, s3_env, monkeypatch, caplog):
    monkeypatch.setenv("TRAINSTACK_BUCKET_PREFIX", "cli-")
    with caplog.at_level(logging.INFO, logger="trainer.cli"):
        trainer_main(["buckets"])
    assert "buckets cli-datasets, cli-models, cli-metrics ready" in caplog.text
    assert "created: cli-datasets, cli-models, cli-metrics" in caplog.text
    assert "cli-mlflow" not in caplog.text and "cli-mlflow" not in raw_buckets(s3_store)


def test_buckets_tracking_also_makes_the_mlflow_bucket(s3_store, s3_env, monkeypatch, caplog):
    """The stack's bucket Job with `mlflow`: the MLflow server's artifact bucket too."""
    monkeypatch.setenv("TRAINSTACK_BUCKET_PREFIX", "cli-")
    with caplog.at_level(logging.INFO, logger="trainer.cli"):
        trainer_main(["buckets", "--tracking"])
    assert "buckets cli-datasets, cli-models, cli-metrics, cli-mlflow ready" in caplog.text
    assert {"cli-datasets", "cli-models", "cli-metrics", "cli-mlflow"} <= raw_buckets(s3_store)


def test_region_signs_requests_and_places_new_buckets(s3_store, s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    store = S3Store(s3_endpoint, bucket_prefix="eu-")
    store.ensure_buckets()
    store.put_bytes("datasets/x/a.bin", b"abc")
    s3 = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="eu-west-1",
                      aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
    location = s3.get_bucket_location(Bucket="eu-datasets")["LocationConstraint"]
    assert location == "eu-west-1"
    assert store.get_bytes("datasets/x/a.bin") == b"abc"


@pytest.mark.parametrize(("url", "form"), [
    ("s3://host", "s3://HOST:PORT"),  # plain HTTP needs its port
    ("s3://host:0", "s3://HOST:PORT"),
    ("s3://host:70000", "s3://HOST:PORT"),
    ("s3://host:9000/extra", "s3://HOST:PORT"),
    ("s3://user:pw@host:9000", "s3://HOST:PORT"),
    ("s3s://host/bucket", "s3s://HOST[:PORT]"),
    ("s3s://-host", "s3s://HOST[:PORT]"),
])
def test_bad_store_urls_name_the_allowed_form(url, form, s3_env):
    with pytest.raises(StoreError, match=f"must be {form.replace('[', '.').replace(']', '.')}"):
        open_store(url)


def test_tls_store_defaults_to_port_443(s3_env):
    store = open_store("s3s://s3.eu-west-1.amazonaws.com")
    assert store.url == "s3s://s3.eu-west-1.amazonaws.com"
    base = store.client._base_url
    assert base.is_https and base.host == "s3.eu-west-1.amazonaws.com"  # no port: 443
    assert open_store("s3s://ceph.internal:8443").client._base_url.host == "ceph.internal:8443"


@pytest.fixture
def tls_s3(tmp_path):
    """moto's S3 app behind TLS on 127.0.0.1 with a fresh self-signed certificate."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    port = free_port()
    server = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app),
                         threaded=True, ssl_context=(str(cert_file), str(key_file)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port, cert_file
    server.shutdown()


def test_s3s_speaks_tls_and_trusts_ssl_cert_file(tls_s3, s3_env, monkeypatch):
    """A private CA (Ceph, an internal MinIO) is trusted through SSL_CERT_FILE."""
    port, cert_file = tls_s3
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    store = open_store(f"s3s://localhost:{port}")
    store.ensure_buckets()
    store.put_bytes("metrics/m-d/v.json", b"{}")
    assert store.list("metrics/") == ["metrics/m-d/v.json"]
    monkeypatch.delenv("SSL_CERT_FILE")  # the certificate is no longer trusted
    monkeypatch.setattr(S3Store, "RETRIES", 1)
    untrusted = open_store(f"s3s://localhost:{port}")
    untrusted.client._http.connection_pool_kw["retries"] = 0
    with pytest.raises(StoreError, match="unreachable.*CERTIFICATE_VERIFY_FAILED"):
        untrusted.get_bytes("metrics/m-d/v.json")
