"""Peak memory of loading and augmenting, against the size of what is loaded.

Each figure is a high-water mark of the process's resident set, measured in a fresh
process around one step only (tests/trainer/memory_probe.py). ``SLACK`` covers what does
not scale with the data: allocator arenas, decoder buffers, thread stacks.
"""

from __future__ import annotations

import pytest

from tests.trainer.memory_probe import probe

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
SLACK = 32 * MIB


def test_imagefolder_peak_is_about_the_decoded_size(tmp_path):
    report = probe("imagefolder", tmp_path)
    assert report["error"] is None
    assert report["peak_growth"] <= 1.25 * report["payload"] + SLACK, report


def test_cifar_peak_is_about_the_decoded_size(tmp_path):
    """Not the archive, its members and the arrays at once."""
    report = probe("cifar", tmp_path)
    assert report["error"] is None
    assert report["peak_growth"] <= 1.5 * report["payload"] + SLACK, report


def test_a_cifar_label_amplification_bomb_is_refused_before_it_expands(tmp_path):
    report = probe("label_bomb", tmp_path)
    assert report["error"] and "labels" in report["error"], report
    assert "data_batch_1" in report["error"]
    assert report["peak_growth"] <= SLACK, report


def test_augmenting_needs_no_padded_copy_of_the_training_split(tmp_path):
    report = probe("augment", tmp_path)
    assert report["peak_growth"] <= 4 * report["payload"] + 8 * MIB, report


def test_streaming_holds_one_shard_in_memory_even_where_it_changes_shard(tmp_path):
    """A shard and the batches cut from it; not also the shard before, the new shard's tar
    member and a copy of it (four shards and more, measured before the fix), where the
    trainer's memory plan (trainer.limits.footprint) counts one."""
    report = probe("stream_shards", tmp_path)
    assert report["error"] is None
    assert report["peak_growth"] <= 2 * report["payload"], report
