"""An imagefolder ingest names every file it cannot read, in one run and in its own words
(issue 28 item 15)."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.trainer.image_trees import image_tree
from trainer.contract.errors import IngestError
from trainer.data.ingest import ingest


def test_an_ingest_names_every_unreadable_file_in_one_run_in_its_own_words(local_store,
                                                                            tmp_path):
    """Issue 28 item 15: four bad files, one run, one line naming all four; no advice meant
    for the web app's users ("send a PNG ...")."""
    local_store.ensure_buckets()
    tree = image_tree(tmp_path / "pets")
    (tree / "dog" / "readme.txt").write_text("not an image")
    Image.effect_noise((64, 64), 60).convert("RGB").save(tree / "cat" / "cut.jpg")
    data = (tree / "cat" / "cut.jpg").read_bytes()
    (tree / "cat" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tree / "dog" / "notes.png").write_text("a text file with an image's name")
    (tree / "dog" / "empty.gif").write_bytes(b"")
    with pytest.raises(IngestError) as refused:
        ingest(local_store, "imagefolder", str(tree))
    message = str(refused.value)
    assert "\n" not in message
    assert f"imagefolder source {str(tree)!r}: 4 files are not images the trainer can read" \
        in message, message
    for named in ("cat/cut.jpg: the image is corrupt or truncated",
                  "dog/empty.gif: the file is empty (0 bytes)",
                  "dog/notes.png: not in a format the trainer reads (PNG, JPEG, GIF, BMP, TIFF or "
                  + "WebP)",
                  "dog/readme.txt: not an image file (allowed: .png, .jpg"):
        assert named in message, message
    assert "send" not in message, message
    assert local_store.list("datasets/") == []


def test_an_ingest_names_twenty_unreadable_files_and_counts_the_rest(local_store, tmp_path):
    local_store.ensure_buckets()
    tree = image_tree(tmp_path / "pets")
    for i in range(25):
        (tree / "cat" / f"bad{i:02d}.png").write_bytes(b"not a png")
    with pytest.raises(IngestError) as refused:
        ingest(local_store, "imagefolder", str(tree))
    message = str(refused.value)
    assert "25 files are not images the trainer can read" in message, message
    named = [f"cat/bad{i:02d}.png" for i in range(25) if f"cat/bad{i:02d}.png:" in message]
    assert named == [f"cat/bad{i:02d}.png" for i in range(20)], message
    assert message.endswith("; and 5 more"), message
