"""Ingest a custom image dataset: ``<class>/<image>`` folders into ``datasets/imagefolder/``.

The source is a local directory, or a ``.zip`` / ``.tar.gz`` (local path or http(s)
URL) holding one; ``train/`` and ``test/`` folders of classes are kept as they are.
Every image is checked before anything is uploaded. A manifest of per-file sha256
digests (a dot-file) goes last and makes re-runs a no-op. Objects are never deleted;
the reader trains on exactly the files the manifest lists, so files removed from the
source since an earlier ingest are ignored.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import tempfile
import zipfile
from pathlib import Path

from trainer.data import check_image_name, imagefolder_layout
from trainer.download import fetch
from trainer.errors import DatasetError, IngestError, ObjectNotFound
from trainer.layout import manifest_key
from trainer.storage import Store

log = logging.getLogger(__name__)

PREFIX = "datasets/imagefolder"
ARCHIVES = (".zip", ".tar.gz", ".tgz")


def ingest_folder(store: Store, source: str, prefix: str = PREFIX) -> str:
    """Upload the image folders in ``source`` under ``prefix``; return the prefix."""
    with tempfile.TemporaryDirectory(prefix="trainstack-ingest-") as tmp:
        root = _unpack(source, Path(tmp))
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        rel = [p.relative_to(root).as_posix() for p in files]
        imagefolder_layout([f"{prefix}/{r}" for r in rel], prefix)  # raises on a bad layout
        for path, name in zip(files, rel):
            _check_image(path, name)
        manifest = "".join(f"{_sha256(p)}  {r}\n" for p, r in zip(files, rel)).encode()
        manifest_at = manifest_key(prefix)
        try:
            if store.get_bytes(manifest_at) == manifest:
                log.info("%s already ingested in %s: nothing to do", prefix, store.url)
                return prefix
        except ObjectNotFound:
            pass
        log.info("uploading %d images from %s to %s/%s", len(files), source, store.url, prefix)
        for path, name in zip(files, rel):
            store.put_file(f"{prefix}/{name}", path)
        store.put_bytes(manifest_at, manifest)  # last: its presence means "complete"
    return prefix


def _unpack(source: str, tmp: Path) -> Path:
    """A directory to read ``<class>/...`` from (an archive's single top folder is skipped)."""
    local = Path(source).expanduser()
    if "://" not in source and local.is_dir():
        return local
    if not source.lower().endswith(ARCHIVES):
        raise IngestError(f"imagefolder source {source!r}: expected a directory or one of "
                          f"{', '.join(ARCHIVES)}")
    archive = fetch(source, tmp / Path(source).name)
    out = tmp / "unpacked"
    try:
        if source.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:  # zipfile drops absolute and '..' parts
                zf.extractall(out)
        else:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(out, filter="data")  # refuses links and paths outside `out`
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise IngestError(f"imagefolder source {source!r}: cannot unpack ({e})") from None
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "test"):
        children = [p for p in entries[0].iterdir() if not p.name.startswith(".")]
        if children and all(p.is_dir() for p in children):
            return entries[0]
    return out


def _check_image(path: Path, name: str) -> None:
    from PIL import Image

    check_image_name(name)
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as e:  # PIL raises many types for a broken file
        raise DatasetError(f"{name}: cannot be decoded as an image ({e})") from e


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
