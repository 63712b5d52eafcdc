"""Ingest a custom image dataset: ``<class>/<image>`` folders into ``datasets/<name>/``.

``<name>`` is ``imagefolder`` (the stack's one image folder, whose source is configuration:
another source replaces the stored images, with a warning) or ``imagefolder-<label>`` (an
image folder of its own, as `make demo` names one after its folder: another source under
the same name is refused unless ``replace``, so two folders never share one name's models).
Where the images came from (a path, or a URL without its credentials) is written to
``.source`` next to the manifest.

The source is a local directory, or a ``.zip`` / ``.tar.gz`` (local path or http(s)
URL) holding one; ``train/`` and ``test/`` folders of classes are kept as they are.
Every image is decoded, by the trainer's own decoder, before anything is uploaded (a
truncated JPEG fails here, not on every rank at every restart), and one run names every
file it cannot read (up to MAX_NAMED, then how many more). A manifest of per-file
sha256 digests (a dot-file) goes last and makes re-runs a no-op. Objects are never
deleted; the reader trains on exactly the files the manifest lists, so files removed from
the source since an earlier ingest are ignored.

An archive is a hostile input until proven otherwise: before anything is unpacked, a zip's
index, and a tar's headers as they stream by, are held to MAX_FILES files, MAX_UNPACKED_BYTES
in all, and (above RATIO_FLOOR_BYTES) MAX_RATIO times the archive's own size; a download
stops at MAX_ARCHIVE_BYTES. Together (3.5 GiB) they fit the stack's default ingest Job
ephemeral storage (`ingestStorage`, 4Gi), which must hold the archive plus what it unpacks
to. A local directory is read where it lies: nothing is unpacked.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from trainer.contract.errors import IngestError, ObjectNotFound
from trainer.contract.layout import IMAGE_SUFFIXES, is_image_name, manifest_key, source_key
from trainer.data import pixels
from trainer.data.download import fetch, redacted_url
from trainer.data.imagefolder import imagefolder_layout
from trainer.data.streaming.ingest import DEFAULT_SHARD_BYTES, shards_current, write_shards
from trainer.store import Store

log = logging.getLogger(__name__)

PREFIX = "datasets/imagefolder"
ARCHIVES = (".zip", ".tar.gz", ".tgz")
MAX_ARCHIVE_BYTES = 1536 * 1024**2
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_FILES = 500_000
# Image files are compressed already: a zip or tar.gz of them is close to 1:1.
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 4 * 1024**2
# Side length the ingest check decodes to: any size decodes the whole file.
CHECK_SIZE = 32
# Unreadable files an ingest names (then counts the rest): all of a few, a line of many.
MAX_NAMED = 20


def ingest_folder(store: Store, source: str, prefix: str = PREFIX, *, image_size: int = 32,
                  shard_bytes: int = DEFAULT_SHARD_BYTES, replace: bool | None = None) -> str:
    """Upload the image folders in ``source`` under ``prefix``, then write their shards at
    ``image_size`` pixels (trainer.data.streaming.ingest); return the prefix. ``replace``:
    whether other images from another source may replace the stored ones (None: only
    under the stack's ``datasets/imagefolder``)."""
    with tempfile.TemporaryDirectory(prefix="trainstack-ingest-") as tmp:
        root = _unpack(source, Path(tmp))
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        rel = [p.relative_to(root).as_posix() for p in files]
        # Before anything is uploaded: a folder training would refuse never replaces the
        # stored dataset. Errors name the user's source, not the store's prefix.
        shown = redacted_url(source).rstrip("/") or source
        imagefolder_layout([f"{shown}/{r}" for r in rel], shown)
        digests = _checked_digests(files, rel, shown)
        manifest = "".join(f"{d}  {r}\n" for d, r in zip(digests, rel)).encode()
        manifest_at = manifest_key(prefix)
        try:
            stored = store.get_bytes(manifest_at)
        except ObjectNotFound:
            stored = None
        origin = source_origin(source)
        if stored == manifest:
            _record_origin(store, prefix, origin)  # the same images, perhaps moved
            if shards_current(store, prefix, image_size):
                log.info("%s already ingested in %s: nothing to do", prefix, store.url)
                return prefix
        else:
            if stored is not None:
                check_replacement(store, prefix, (stored, manifest), origin,
                                  prefix == PREFIX if replace is None else replace)
            log.info("uploading %d images from %s to %s/%s", len(files), redacted_url(source),
                     store.url, prefix)
            for path, name in zip(files, rel):
                store.put_file(f"{prefix}/{name}", path)
            store.put_bytes(source_key(prefix), origin.encode())
            store.put_bytes(manifest_at, manifest)  # last: its presence means "complete"
        write_shards(store, prefix, files, rel, image_size=image_size, shard_bytes=shard_bytes)
    return prefix


def source_origin(source: str) -> str:
    """Where ``source`` is, for ``.source``: a local path made absolute, a URL without its
    userinfo and query (credentials; a presigned URL's signature changes every time)."""
    if "://" in source:
        return redacted_url(source)
    return str(Path(source).expanduser().resolve())


def _record_origin(store: Store, prefix: str, origin: str) -> None:
    try:
        if store.get_bytes(source_key(prefix)).decode() == origin:
            return
    except (ObjectNotFound, UnicodeDecodeError):
        pass
    store.put_bytes(source_key(prefix), origin.encode())


def describe_manifest(manifest: bytes) -> str:
    """``12 images of 3 classes (cat, dog, fox)`` of a manifest's ``<sha256>  <path>`` lines."""
    paths = [line.partition("  ")[2] for line in manifest.decode(errors="replace").splitlines()]
    classes = sorted({PurePosixPath(path).parent.name for path in paths if path})
    shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
    return f"{len(paths)} images of {len(classes)} classes ({shown})"


def check_replacement(store: Store, prefix: str, manifests: tuple[bytes, bytes], origin: str,
                      replace: bool) -> None:
    """Other images are about to replace the stored ones: say so, or refuse (IngestError)
    when they come from another source and ``replace`` is False."""
    try:
        before = store.get_bytes(source_key(prefix)).decode()
    except (ObjectNotFound, UnicodeDecodeError):
        before = None  # ingested before .source existed
    stored, new = (describe_manifest(m) for m in manifests)
    name = PurePosixPath(prefix).name
    if before is not None and before != origin and not replace:
        raise IngestError(
            f"dataset {name} in {store.url} holds {stored} from {before}; {origin} is another "
            "folder, so it is another dataset: give it a name of its own (make demo "
            "DATASET_NAME=<label>; trainer ingest --dataset-name imagefolder-<label>), or "
            "replace the stored images with `trainer ingest --replace`")
    log.warning("replacing dataset %s in %s: %s from %s become %s from %s; the versions "
                "trained on the old images stay, the next run trains on the new ones", name,
                store.url, stored, before or "an earlier ingest", new, origin)


def _unpack(source: str, tmp: Path) -> Path:
    """A directory to read ``<class>/...`` from (an archive's single top folder is skipped)."""
    local = Path(source).expanduser()
    if "://" not in source and local.is_dir():
        return local
    # A URL's query is no part of the file's name (a presigned URL's signature), and with
    # its userinfo it stays out of every message.
    shown = redacted_url(source)
    if "://" not in source and not local.exists():
        raise IngestError(f"imagefolder source {source!r} does not exist; expected a "
                          f"directory of <class>/<image> folders or one of {', '.join(ARCHIVES)}")
    if not shown.lower().endswith(ARCHIVES):
        raise IngestError(f"imagefolder source {shown!r}: expected a directory or one of "
                          f"{', '.join(ARCHIVES)}")
    archive = fetch(source, tmp / PurePosixPath(shown).name, max_bytes=MAX_ARCHIVE_BYTES)
    out = tmp / "unpacked"
    out.mkdir()
    limits = _Limits(shown, archive.stat().st_size)
    try:
        if shown.lower().endswith(".zip"):
            _unzip(archive, out, limits)
        else:
            _untar(archive, out, limits)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise IngestError(f"imagefolder source {shown!r}: cannot unpack ({e})") from None
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "test"):
        children = [p for p in entries[0].iterdir() if not p.name.startswith(".")]
        if children and all(p.is_dir() for p in children):
            return entries[0]
    return out


class _Limits:
    """Running totals of what an archive unpacks to, checked before each file is written."""

    def __init__(self, source: str, archive_bytes: int):
        self.source, self.archive_bytes = source, max(1, archive_bytes)
        self.files = self.total = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.total += size
        if self.files > MAX_FILES:
            raise IngestError(f"imagefolder source {self.source!r} holds {self.files:,} files, "
                              f"more than {MAX_FILES:,}")
        if self.total > MAX_UNPACKED_BYTES:
            raise IngestError(f"imagefolder source {self.source!r} unpacks to more than "
                              f"{MAX_UNPACKED_BYTES:,} bytes")
        if self.total > RATIO_FLOOR_BYTES and self.total > MAX_RATIO * self.archive_bytes:
            raise IngestError(f"imagefolder source {self.source!r} is compressed more than "
                              f"{MAX_RATIO}:1 ({self.archive_bytes:,} bytes unpack to "
                              f"{self.total:,} so far): not a folder of images")


def _unzip(archive: Path, out: Path, limits: _Limits) -> None:
    """Every limit is checked from the zip's index before one file is written; zipfile then
    writes no member beyond the size its index gives, and drops absolute and '..' parts."""
    with zipfile.ZipFile(archive) as zf:
        members = [info for info in zf.infolist() if not info.is_dir()]
        for info in members:
            limits.add(info.file_size)
        for info in members:
            zf.extract(info, out)


def _untar(archive: Path, out: Path, limits: _Limits) -> None:
    """A tar.gz has no index: its members are streamed, each checked before it is written."""
    with tarfile.open(archive, "r|gz") as tar:
        for info in tar:
            if info.isfile():
                limits.add(info.size)
            tar.extract(info, out, filter="data")  # refuses links and paths outside `out`


def _checked_digests(files: list[Path], rel: list[str], shown: str) -> list[str]:
    """Every file's sha256, once each decodes with the trainer's own decoder; else one
    IngestError naming the files that do not (MAX_NAMED of them, and how many more)."""
    digests, unreadable = [], []
    for path, name in zip(files, rel):
        data = path.read_bytes()
        reason = _unreadable(data, name)
        if reason is not None:
            unreadable.append(f"{name}: {reason}")
        digests.append(hashlib.sha256(data).hexdigest())
    if unreadable:
        count = len(unreadable)
        more = f"; and {count - MAX_NAMED} more" if count > MAX_NAMED else ""
        what = ("1 file is not an image the trainer can read (remove or replace it" if count == 1
                else f"{count} files are not images the trainer can read (remove or replace them")
        raise IngestError(f"imagefolder source {shown!r}: {what}, then ingest again): "
                          f"{'; '.join(unreadable[:MAX_NAMED])}{more}")
    return digests


def _unreadable(data: bytes, name: str) -> str | None:
    """Why the file is no image the trainer can read; None when it is one."""
    if not is_image_name(name):
        return f"not an image file (allowed: {', '.join(IMAGE_SUFFIXES)})"
    try:
        pixels.to_pixels(data, (3, CHECK_SIZE, CHECK_SIZE))
    except pixels.ImageError as e:
        return e.reason
    return None
