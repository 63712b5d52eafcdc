"""Small helpers every test package shares."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def empty_s3(store):
    """Remove every bucket of an S3Store: moto keeps one state per process, shared by all
    its servers, so a test's server still holds earlier tests' objects."""
    for bucket in store.client.list_buckets():
        for obj in store.client.list_objects(bucket.name, recursive=True):
            store.client.remove_object(bucket.name, obj.object_name)
        store.client.remove_bucket(bucket.name)
    return store
