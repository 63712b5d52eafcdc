"""Ingest: local path and http sources into both stores, idempotence, md5, HTTP errors."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import tempfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import torch

from tests.trainer.cifar_fixtures import archive_bytes, make_batches
from trainer.contract.errors import DatasetError
from trainer.contract.layout import cifar10_key
from trainer.data import ingest as ingest_mod
from trainer.data.loading import load_dataset

CIFAR10_KEY = cifar10_key()
from trainer.contract.errors import IngestError
from trainer.data.ingest import ingest


class _Files(BaseHTTPRequestHandler):
    # Class attributes: the server builds a new handler per request; the fixture resets them.
    files: ClassVar[dict[str, bytes]] = {}
    fail_first: ClassVar[dict[str, int]] = {}  # path -> how many 503s before the file
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        self.hits.append(self.path)
        if self.fail_first.get(self.path, 0) > 0:
            self.fail_first[self.path] -= 1
            self.send_error(503, "busy")
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def archive() -> bytes:
    return archive_bytes(make_batches(per_class=1))


@pytest.fixture
def http_files():
    """A file server on 127.0.0.1; returns (base URL, handler class to configure)."""
    _Files.files, _Files.fail_first, _Files.hits = {}, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Files
    server.shutdown()
    server.server_close()


def _count_puts(store, monkeypatch) -> list[str]:
    puts: list[str] = []
    for method in ("put_bytes", "put_file"):
        original = getattr(store, method)
        monkeypatch.setattr(store, method,
                            lambda key, data, _orig=original: (puts.append(key), _orig(key, data))[1])
    return puts


def test_ingest_local_path_then_rerun_does_nothing(any_store, archive, tmp_path, monkeypatch, caplog):
    any_store.ensure_buckets()
    source = tmp_path / "my-cifar.tar.gz"
    source.write_bytes(archive)
    assert ingest(any_store, "cifar10", str(source)) == CIFAR10_KEY
    assert any_store.get_bytes(CIFAR10_KEY) == archive
    sha = hashlib.sha256(archive).hexdigest()
    assert any_store.get_bytes(CIFAR10_KEY + ".sha256").decode().split()[0] == sha
    assert len(load_dataset("cifar10", any_store).train) == 50

    puts = _count_puts(any_store, monkeypatch)
    caplog.clear()
    assert ingest(any_store, "cifar10", str(source)) == CIFAR10_KEY
    assert puts == [] and "already ingested" in caplog.text


def test_ingest_changed_content_replaces_object(local_store, tmp_path):
    local_store.ensure_buckets()
    first, second = (archive_bytes(make_batches(per_class=1, seed=s)) for s in (1, 2))
    for content in (first, second):
        (tmp_path / "c.tar.gz").write_bytes(content)
        ingest(local_store, "cifar10", str(tmp_path / "c.tar.gz"))
    assert local_store.get_bytes(CIFAR10_KEY) == second


def test_ingest_from_http_url(any_store, archive, http_files):
    base, files = http_files
    files.files["/data/cifar.tar.gz"] = archive
    any_store.ensure_buckets()
    assert ingest(any_store, "cifar10", f"{base}/data/cifar.tar.gz") == CIFAR10_KEY
    assert any_store.get_bytes(CIFAR10_KEY) == archive


def test_transient_503_is_retried(local_store, archive, http_files):
    base, files = http_files
    files.files["/c.tar.gz"] = archive
    files.fail_first["/c.tar.gz"] = 1
    local_store.ensure_buckets()
    ingest(local_store, "cifar10", f"{base}/c.tar.gz")
    assert files.hits == ["/c.tar.gz", "/c.tar.gz"]
    assert local_store.get_bytes(CIFAR10_KEY) == archive


def test_http_404_is_a_clear_error(local_store, http_files):
    base, _ = http_files
    local_store.ensure_buckets()
    with pytest.raises(IngestError, match=r"HTTP 404 Not Found"):
        ingest(local_store, "cifar10", f"{base}/missing.tar.gz")
    assert not local_store.exists(CIFAR10_KEY)


def test_wrong_format_source_is_rejected_before_upload(local_store, tmp_path):
    local_store.ensure_buckets()
    bad = tmp_path / "page.html"
    bad.write_bytes(b"<html>moved</html>")
    with pytest.raises(DatasetError, match="page.html: not a complete gzip-compressed tar"):
        ingest(local_store, "cifar10", str(bad))
    assert not local_store.exists(CIFAR10_KEY)


def test_md5_mismatch_says_expected_and_got(local_store, archive, http_files):
    base, files = http_files
    files.files["/c.tar.gz"] = archive
    local_store.ensure_buckets()
    got = hashlib.md5(archive).hexdigest()
    with pytest.raises(IngestError, match=f"expected {'0' * 32}, got {got}"):
        ingest(local_store, "cifar10", f"{base}/c.tar.gz", expected_md5="0" * 32)
    assert not local_store.exists(CIFAR10_KEY)


def test_default_source_is_md5_checked(local_store, archive, http_files, monkeypatch):
    """The official URL's path, offline: the default URL points at the test server."""
    base, files = http_files
    files.files["/cifar-10-python.tar.gz"] = archive
    monkeypatch.setattr(ingest_mod, "DEFAULT_CIFAR10_URL", f"{base}/cifar-10-python.tar.gz")
    local_store.ensure_buckets()
    with pytest.raises(IngestError, match=f"expected {ingest_mod.CIFAR10_MD5}"):
        ingest(local_store, "cifar10")

    monkeypatch.setattr(ingest_mod, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    assert ingest(local_store, "cifar10") == CIFAR10_KEY
    files.hits.clear()
    ingest(local_store, "cifar10")  # known md5 already stored: not even downloaded
    assert files.hits == []


def test_other_datasets(local_store, caplog):
    assert ingest(local_store, "digits") == "" and "nothing to ingest" in caplog.text
    assert ingest(local_store, "synthetic") == ""
    with pytest.raises(IngestError, match="unknown dataset 'mnist'"):
        ingest(local_store, "mnist")
    with pytest.raises(IngestError, match="only http:// and https:// URLs are .* or a local path"):
        ingest(local_store, "cifar10", "ftp://example.org/c.tar.gz")
    with pytest.raises(IngestError, match="'/nonexistent/c.tar.gz' does not exist"):
        ingest(local_store, "cifar10", "/nonexistent/c.tar.gz")


def _image_tree(root, bad: bool = False):
    from PIL import Image

    for cls, color in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (10, 10), color).save(root / cls / f"{i}.png")
    if bad:
        (root / "dog" / "readme.txt").write_text("not an image")
    return root


def test_imagefolder_from_directory_and_tarball(any_store, tmp_path, monkeypatch, caplog):
    import tarfile

    any_store.ensure_buckets()
    tree = _image_tree(tmp_path / "pets")
    with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname="pets")  # a single top folder, as archives usually have
    assert ingest(any_store, "imagefolder", str(tmp_path / "pets.tar.gz")) == "datasets/imagefolder"
    bundle = load_dataset("imagefolder", any_store, image_size=8)
    assert bundle.classes == ["cat", "dog"] and len(bundle.train) + len(bundle.test) == 8

    puts = _count_puts(any_store, monkeypatch)
    caplog.clear()
    ingest(any_store, "imagefolder", str(tree))  # same content from the directory
    # No image uploaded again; only where they are now is recorded (issue 28 #13).
    assert puts == ["datasets/imagefolder/.source"] and "already ingested" in caplog.text
    assert any_store.get_bytes("datasets/imagefolder/.source").decode() == str(tree)


def test_imagefolder_non_image_is_rejected_before_upload(local_store, tmp_path):
    local_store.ensure_buckets()
    tree = _image_tree(tmp_path / "pets", bad=True)
    with pytest.raises(DatasetError, match="dog/readme.txt: not an image"):
        ingest(local_store, "imagefolder", str(tree))
    assert local_store.list("datasets/imagefolder/") == []
    with pytest.raises(IngestError, match="needs --source"):
        ingest(local_store, "imagefolder")


def test_imagefolder_reingest_trains_only_on_the_current_files(any_store, tmp_path):
    """Re-ingest never deletes objects; the reader must follow the new manifest only."""
    from PIL import Image

    any_store.ensure_buckets()
    tree = _image_tree(tmp_path / "v1")
    (tree / "bird").mkdir()
    for i in range(4):
        Image.new("RGB", (10, 10), (10, 200, 10)).save(tree / "bird" / f"{i}.png")
    ingest(any_store, "imagefolder", str(tree))
    assert load_dataset("imagefolder", any_store, image_size=8).classes == ["bird", "cat", "dog"]

    # v2: the bird class and dog/3.png are gone, cat/0.png has new pixels.
    (tree / "dog" / "3.png").unlink()
    for i in range(4):
        (tree / "bird" / f"{i}.png").unlink()
    (tree / "bird").rmdir()
    Image.new("RGB", (10, 10), (255, 255, 255)).save(tree / "cat" / "0.png")
    ingest(any_store, "imagefolder", str(tree))
    assert any_store.exists("datasets/imagefolder/bird/0.png")  # stale objects remain...

    bundle = load_dataset("imagefolder", any_store, image_size=8)  # ...and are not read
    assert bundle.classes == ["cat", "dog"]
    labels = torch.cat([bundle.train.labels, bundle.test.labels])
    images = torch.cat([bundle.train.images, bundle.test.images])
    assert (labels == 0).sum() == 4 and (labels == 1).sum() == 3
    assert (images[labels == 0] == 255).all(dim=(1, 2, 3)).sum() == 1  # the changed cat/0.png


class DiskSampler:
    """Samples how many bytes the files under a folder hold, until stopped (max kept)."""

    def __init__(self, root):
        self.root, self.peak = root, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            total = 0
            for folder, _, names in os.walk(self.root):  # skips folders deleted meanwhile
                for name in names:
                    with contextlib.suppress(OSError):  # deleted meanwhile
                        total += os.stat(os.path.join(folder, name)).st_size
            self.peak = max(self.peak, total)
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


ZEROS = bytes(1024 * 1024)


def _zip_bomb(path, unpacked_mb: int):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("cat/0.png", "w") as member:
            for _ in range(unpacked_mb):
                member.write(ZEROS)
        zf.writestr("dog/0.png", b"x")
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _tar_bomb(path, unpacked_mb: int):
    with tarfile.open(path, "w:gz") as tar:
        for i, cls in enumerate(("cat", "dog", "cow")):
            info = tarfile.TarInfo(f"{cls}/{i}.png")
            info.size = unpacked_mb * 1024 * 1024 // 3
            tar.addfile(info, _Zeros(info.size))
    return path


@pytest.fixture
def small_unpack_limits(monkeypatch, tmp_path):
    """Limits scaled down to what a test can build; ingest's temp files go to a watched folder."""
    from trainer.data import ingest_folder

    monkeypatch.setattr(ingest_folder, "MAX_UNPACKED_BYTES", 20 * 1024 * 1024, raising=False)
    monkeypatch.setattr(ingest_folder, "MAX_FILES", 1000, raising=False)
    watched = tmp_path / "tmp"
    watched.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(watched))
    return watched


@pytest.mark.parametrize("make", [_zip_bomb, _tar_bomb])
def test_an_archive_that_unpacks_beyond_the_limit_is_refused_before_it_fills_the_disk(
        make, local_store, tmp_path, small_unpack_limits):
    local_store.ensure_buckets()
    bomb = make(tmp_path / ("bomb.zip" if make is _zip_bomb else "bomb.tar.gz"), 200)
    archive_size = bomb.stat().st_size
    with DiskSampler(small_unpack_limits) as disk, \
            pytest.raises(IngestError, match="unpacks to more than 20,971,520 bytes"):
        ingest(local_store, "imagefolder", str(bomb))
    assert disk.peak <= 20 * 1024 * 1024 + archive_size, f"{disk.peak:,} bytes were unpacked"
    assert local_store.list("datasets/") == []


def test_an_archive_of_too_many_files_is_refused_from_its_index(local_store, tmp_path,
                                                               small_unpack_limits):
    local_store.ensure_buckets()
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as zf:
        for i in range(1001):
            zf.writestr(f"c{i % 2}/{i}.png", b"")
    with DiskSampler(small_unpack_limits) as disk, \
            pytest.raises(IngestError, match="1,001 files, more than 1,000"):
        ingest(local_store, "imagefolder", str(tmp_path / "many.zip"))
    assert disk.peak <= (tmp_path / "many.zip").stat().st_size


def test_an_archive_compressed_far_beyond_what_images_allow_is_refused(local_store, tmp_path,
                                                                      monkeypatch):
    from trainer.data import ingest_folder

    monkeypatch.setattr(ingest_folder, "MAX_RATIO", 100, raising=False)
    local_store.ensure_buckets()
    bomb = _zip_bomb(tmp_path / "bomb.zip", 8)  # 8 MiB of zeros: about 1000:1
    with pytest.raises(IngestError, match="compressed more than 100:1"):
        ingest(local_store, "imagefolder", str(bomb))


def test_a_truncated_jpeg_is_refused_at_ingest_not_by_every_rank_later(local_store, tmp_path):
    from PIL import Image

    local_store.ensure_buckets()
    tree = _image_tree(tmp_path / "pets")
    noisy = Image.effect_noise((64, 64), 60).convert("RGB")
    noisy.save(tree / "cat" / "photo.jpg", quality=90)
    data = (tree / "cat" / "photo.jpg").read_bytes()
    (tree / "cat" / "photo.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cat/photo.jpg: the image is corrupt or truncated"):
        ingest(local_store, "imagefolder", str(tree))
    assert local_store.list("datasets/") == []


def test_a_truncated_photo_is_refused_although_it_is_decoded_at_reduced_size(local_store,
                                                                             tmp_path):
    """The ingest check uses the pixels function, which decodes a big JPEG at 1/8 size
    (DCT scaling): that still reads every scan, so a cut-off photo is still refused."""
    from PIL import Image

    local_store.ensure_buckets()
    tree = _image_tree(tmp_path / "pets")
    Image.effect_noise((1600, 1200), 60).convert("RGB").save(tree / "dog" / "big.jpg",
                                                             quality=90)
    data = (tree / "dog" / "big.jpg").read_bytes()
    (tree / "dog" / "big.jpg").write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(DatasetError, match="dog/big.jpg: the image is corrupt or truncated"):
        ingest(local_store, "imagefolder", str(tree))
    assert local_store.list("datasets/") == []
