"""One contract, two implementations: every test runs on a local dir and on S3 (moto)."""

import os
import stat
import threading

import pytest

from trainer.contract.errors import BucketNotFound, ObjectNotFound, PreconditionFailed, StoreError
from trainer.contract.layout import BUCKETS
from trainer.store import LocalStore, S3Store, open_store


def test_ensure_buckets_is_idempotent(any_store):
    assert sorted(any_store.ensure_buckets()) == sorted(BUCKETS)
    assert any_store.ensure_buckets() == []


def test_put_get_roundtrip_and_overwrite(any_store):
    any_store.ensure_buckets()
    any_store.put_bytes("models/m-d/latest.json", b'{"version": "1"}')
    assert any_store.get_bytes("models/m-d/latest.json") == b'{"version": "1"}'
    any_store.put_bytes("models/m-d/latest.json", b'{"version": "2"}')
    assert any_store.get_bytes("models/m-d/latest.json") == b'{"version": "2"}'
    assert any_store.exists("models/m-d/latest.json")
    assert not any_store.exists("models/m-d/other.json")


def test_list_is_recursive_sorted_and_prefix_scoped(any_store):
    any_store.ensure_buckets()
    for key in ["models/a/v/2/x", "models/a/v/1/y", "models/b/z", "datasets/a/v"]:
        any_store.put_bytes(key, b"1")
    assert any_store.list("models/a/") == ["models/a/v/1/y", "models/a/v/2/x"]
    assert any_store.list("models/") == ["models/a/v/1/y", "models/a/v/2/x", "models/b/z"]
    assert any_store.list("models/nothing/") == []


def test_missing_object_is_a_clear_error(any_store):
    any_store.ensure_buckets()
    with pytest.raises(ObjectNotFound, match="models/none.json.*not found"):
        any_store.get_bytes("models/none.json")


def test_missing_bucket_is_a_clear_error(any_store):
    with pytest.raises(BucketNotFound, match="trainer buckets"):
        any_store.get_bytes("models/x.json")
    with pytest.raises(BucketNotFound):
        any_store.put_bytes("models/x.json", b"1")


def test_files_roundtrip(any_store, tmp_path):
    any_store.ensure_buckets()
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    any_store.put_file("datasets/d/file.bin", src)
    out = any_store.get_file("datasets/d/file.bin", tmp_path / "deep" / "out.bin")
    assert out.read_bytes() == src.read_bytes()


def test_concurrent_reader_never_sees_partial_object(any_store):
    any_store.ensure_buckets()
    a, b = b"a" * 300_000, b"b" * 300_000
    any_store.put_bytes("models/race", a)
    stop, seen = threading.Event(), set()

    def read():
        while not stop.is_set():
            seen.add(any_store.get_bytes("models/race"))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20):
        any_store.put_bytes("models/race", b if i % 2 == 0 else a)
    stop.set()
    reader.join()
    assert seen <= {a, b}


def test_keys_must_name_a_bucket_and_stay_inside(local_store):
    with pytest.raises(ValueError, match="<bucket>/<path>"):
        local_store.get_bytes("nobucket")
    local_store.ensure_buckets()
    with pytest.raises(ValueError, match="escapes"):
        local_store.put_bytes("models/../../etc/passwd", b"x")


def test_open_store_parses_urls(tmp_path, s3_env, s3_endpoint, monkeypatch):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"s3://{s3_endpoint}"), S3Store)
    assert isinstance(open_store(), S3Store)  # from TRAINSTACK_STORE
    with pytest.raises(StoreError, match="only s3://"):
        open_store("gs://bucket")
    with pytest.raises(StoreError, match="HOST:PORT"):
        open_store("s3://host:9000/extra")
    monkeypatch.delenv("TRAINSTACK_STORE")
    with pytest.raises(StoreError, match="--store or set TRAINSTACK_STORE"):
        open_store()
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError, match="AWS_SECRET_ACCESS_KEY"):
        open_store(f"s3://{s3_endpoint}")


def test_unreachable_s3_fails_with_a_clear_error_after_retries(s3_env, monkeypatch):
    monkeypatch.setattr(S3Store, "RETRIES", 2)
    monkeypatch.setattr("trainer.store.s3.time.sleep", lambda s: None)
    store = S3Store("127.0.0.1:1")
    store.client._http.connection_pool_kw["retries"] = 0
    with pytest.raises(StoreError, match="unreachable"):
        store.get_bytes("models/x.json")


def test_put_if_absent_creates_once(any_store):
    any_store.ensure_buckets()
    tag = any_store.put_if_absent("models/m-d/versions/v/claim.json", b"first")
    with pytest.raises(PreconditionFailed):
        any_store.put_if_absent("models/m-d/versions/v/claim.json", b"second")
    assert any_store.get_tagged("models/m-d/versions/v/claim.json") == (b"first", tag)


def test_put_if_match_replaces_only_the_version_it_read(any_store):
    any_store.ensure_buckets()
    key = "models/m-d/latest.json"
    with pytest.raises(ObjectNotFound):
        any_store.get_tagged(key)
    with pytest.raises(PreconditionFailed):  # nothing there to match
        any_store.put_if_match(key, b"x", '"0"')
    first = any_store.put_if_absent(key, b"1")
    second = any_store.put_if_match(key, b"2", first)
    assert second != first
    with pytest.raises(PreconditionFailed):  # a stale tag: someone wrote since
        any_store.put_if_match(key, b"3", first)
    assert any_store.get_tagged(key) == (b"2", second)
    any_store.put_bytes(key, b"4")  # an unconditional write changes the tag too
    with pytest.raises(PreconditionFailed):
        any_store.put_if_match(key, b"5", second)


def test_conditional_increments_from_many_writers_lose_no_update(any_store):
    """Read, add one, write if unchanged, else read again: the count equals the writes."""
    any_store.ensure_buckets()
    key = "models/m-d/counter.json"
    any_store.put_if_absent(key, b"0")
    writers, per_writer = 4, 5

    def increment():
        for _ in range(per_writer):
            while True:
                data, tag = any_store.get_tagged(key)
                try:
                    any_store.put_if_match(key, str(int(data) + 1).encode(), tag)
                    break
                except PreconditionFailed:
                    continue

    threads = [threading.Thread(target=increment) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert int(any_store.get_bytes(key)) == writers * per_writer


def test_delete_removes_an_object_and_tolerates_a_missing_one(any_store):
    any_store.ensure_buckets()
    any_store.put_bytes("models/m-d/runs/r/checkpoints/epoch-0001.pt", b"x")
    any_store.delete("models/m-d/runs/r/checkpoints/epoch-0001.pt")
    assert not any_store.exists("models/m-d/runs/r/checkpoints/epoch-0001.pt")
    any_store.delete("models/m-d/runs/r/checkpoints/epoch-0001.pt")
    assert any_store.list("models/m-d/") == []


def test_local_store_files_follow_the_umask_so_other_users_can_read_them(local_store, tmp_path):
    """A trainer and an app running as different users share a local store."""
    old = os.umask(0o022)
    try:
        local_store.ensure_buckets()
        local_store.put_bytes("models/m-d/latest.json", b"{}")
        local_store.put_if_absent("models/m-d/versions/v/claim.json", b"{}")
        local_store.get_file("models/m-d/latest.json", tmp_path / "copy.json")
    finally:
        os.umask(old)
    for path in (local_store.root / "models/m-d/latest.json",
                 local_store.root / "models/m-d/versions/v/claim.json", tmp_path / "copy.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_open_read_streams_the_object(any_store):
    any_store.ensure_buckets()
    data = bytes(range(256)) * 5000
    any_store.put_bytes("datasets/d/big.bin", data)
    with any_store.open_read("datasets/d/big.bin") as stream:
        assert stream.read(1000) == data[:1000]
        assert stream.read() == data[1000:]
    with pytest.raises(ObjectNotFound):
        any_store.open_read("datasets/d/none.bin").__enter__()


def test_conditional_writes_delete_and_streams_use_the_prefixed_buckets(s3_store, s3_endpoint):
    store = S3Store(s3_endpoint, bucket_prefix="acme-")
    store.ensure_buckets()
    tag = store.put_if_absent("models/m-d/latest.json", b"1")
    store.put_if_match("models/m-d/latest.json", b"2", tag)
    raw = store.client._client.get_object("acme-models", "m-d/latest.json")
    assert raw.read() == b"2"
    raw.close()
    raw.release_conn()
    with store.open_read("models/m-d/latest.json") as stream:
        assert stream.read() == b"2"
    store.delete("models/m-d/latest.json")
    assert not store.exists("models/m-d/latest.json")
