"""Issue 9 #12: Gradio's upload cache is cleaned (age, size cap, shutdown)."""

from __future__ import annotations

import os
from pathlib import Path

from inference.edge.uploads import disk_bytes
from tests.inference.inference_helpers import V1, serve_app, wait_for_version, wait_until
from tests.inference.modelkit import png, publish_version, solid


def cached_files() -> set[Path]:
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder())
    return {p for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def upload(base: str, path: Path) -> None:
    from gradio_client import Client, handle_file

    label, _ = Client(base + "/", verbose=False).predict(handle_file(str(path)),
                                                         api_name="/predict")
    assert label["label"] in ("red", "green", "blue")


def pictures(tmp_path: Path, count: int) -> list[Path]:
    """Unique content each run: Gradio names a cached file by the hash of its bytes."""
    paths = []
    for i in range(count):
        image = solid(("red", "green", "blue")[i % 3], (120, 90))
        image.putpixel((0, 0), tuple(os.urandom(3)))
        path = tmp_path / f"upload-{i}.png"
        path.write_bytes(png(image))
        paths.append(path)
    return paths


def test_uploads_do_not_outlive_the_app(local_store, tmp_path):
    publish_version(local_store, V1)
    before = cached_files()
    with serve_app(local_store.url, tmp_path / "cache") as (base, _):
        wait_for_version(base, V1)
        for path in pictures(tmp_path, 3):
            upload(base, path)
        during = cached_files() - before
        assert len([p for p in during if p.name.startswith("upload-")]) == 3
    assert not (cached_files() - before), "uploads left behind after shutdown"


def test_old_uploads_are_deleted_and_the_cache_is_size_capped(local_store, tmp_path):
    publish_version(local_store, V1)
    before = cached_files()
    paths = pictures(tmp_path, 6)
    cap_mb = 2.5 * disk_bytes(str(paths[0])) / 1e6  # room for two of them, folders included
    with serve_app(local_store.url, tmp_path / "cache", upload_cache_mb=cap_mb,
                   upload_cache_max_age_s=3600, upload_cache_sweep_s=0.2) as (base, _app):
        wait_for_version(base, V1)
        for path in paths:
            upload(base, path)

        def uploads() -> list[Path]:
            return [p for p in cached_files() - before if p.name.startswith("upload-")]

        wait_until(lambda: len(uploads()) <= 2, "the size cap to be enforced")
        assert sum(p.stat().st_size for p in uploads()) <= cap_mb * 1e6
        assert {p.name for p in uploads()} <= {"upload-4.png", "upload-5.png"}  # newest kept
    with serve_app(local_store.url, tmp_path / "cache", upload_cache_max_age_s=0.5,
                   upload_cache_sweep_s=0.2) as (base, _):
        wait_for_version(base, V1)
        upload(base, paths[0])
        wait_until(lambda: not [p for p in cached_files() - before
                                if p.name.startswith("upload-")], "old uploads to be deleted")
