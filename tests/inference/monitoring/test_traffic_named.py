"""`make demo-traffic` on an image folder of its own (issue 28 #13): meta.json names the
dataset imagefolder-<label>; the command reads that dataset's test images, not the kind's."""

from __future__ import annotations

import argparse

from inference.monitoring.traffic import pictures
from tests.trainer.image_trees import image_tree
from trainer.data.ingest import ingest


def test_traffic_reads_the_test_images_of_a_named_image_folder(local_store, tmp_path):
    local_store.ensure_buckets()
    ingest(local_store, "imagefolder", str(image_tree(tmp_path / "colours")),
           name="imagefolder-colours")
    args = argparse.Namespace(seed=0, shift="none", count=4, store=local_store.url)
    images = pictures(args, "imagefolder-colours", [3, 32, 32])
    assert images.shape == (4, 3, 32, 32)
