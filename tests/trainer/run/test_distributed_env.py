"""Distributed setup from the environment, and the CPU share of each process."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import torch

from trainer.contract.config import ConfigError
from trainer.limits.cpus import cgroup_cpu_quota, usable_cpus
from trainer.run import distributed
from trainer.run.distributed import DistEnv, configure_cpu_threads


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_quota_v1_and_v2(tmp_path, files, expected):
    for name, text in files.items():
        write(tmp_path / name, text)
    assert cgroup_cpu_quota(tmp_path) == expected


def test_a_pod_cpu_limit_caps_the_threads_and_local_ranks_share_them(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    write(tmp_path / "cpu.max", "400000 100000\n")  # limits.cpu: "4"
    assert usable_cpus(tmp_path) == 4
    before = torch.get_num_threads()
    try:
        local = DistEnv(rank=1, world_size=4, local_rank=1, local_world_size=2,
                        device=torch.device("cpu"))
        assert configure_cpu_threads(local, tmp_path) == 2
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert configure_cpu_threads(local, tmp_path) == 3
    finally:
        torch.set_num_threads(before)


def test_without_ranks_in_the_environment_it_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = distributed.init_distributed()
    assert (env.rank, env.world_size, env.is_main) == (0, 1, True)
    assert not torch.distributed.is_initialized()


def test_ranks_without_a_master_address_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR must be set when WORLD_SIZE and RANK"):
        distributed.init_distributed()


@pytest.mark.parametrize("value, seconds", [(None, 600), ("", 600), ("30", 30), (" 45 ", 45)])
def test_collective_timeout_from_the_environment(monkeypatch, value, seconds):
    if value is None:
        monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(distributed.TIMEOUT_ENV, value)
    assert distributed.dist_timeout() == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "ten", "10s"])
def test_bad_collective_timeout_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match=f"TRAINSTACK_DIST_TIMEOUT_S={value!r} must be a "
                                          "positive integer"):
        distributed.dist_timeout()


def test_init_passes_the_timeout_to_the_process_group(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda **kwargs: calls.append(kwargs))
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500", distributed.TIMEOUT_ENV: "42"}.items():
        monkeypatch.setenv(name, value)
    env = distributed.init_distributed()
    assert (env.rank, env.world_size) == (1, 2)
    assert calls == [{"backend": "gloo", "init_method": "env://", "rank": 1, "world_size": 2,
                      "timeout": timedelta(seconds=42)}]
