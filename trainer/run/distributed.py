"""Distributed setup from the environment only (env://), plus the few collectives we use.

The Training Operator sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK in PyTorchJob
pods (Master = rank 0); torchrun sets the same plus LOCAL_RANK. Without WORLD_SIZE and
RANK the trainer runs as a single process and every helper here is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainer.contract.env import GPU_TORCH_VARIANT, POD_GPUS_ENV
from trainer.contract.errors import ConfigError
from trainer.limits.cgroup import CgroupView
from trainer.limits.cpus import usable_cpus

log = logging.getLogger(__name__)

TIMEOUT_ENV = "TRAINSTACK_DIST_TIMEOUT_S"
# How long a collective waits for a peer before failing. Shorter than torch's 30-minute
# default so that a dead rank 0 ends the pods soon and the operator restarts them.
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} must be an integer") from None


def dist_timeout() -> timedelta:
    """The collective timeout from TRAINSTACK_DIST_TIMEOUT_S (whole seconds, > 0)."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ConfigError(f"environment variable {TIMEOUT_ENV}={value!r} must be a positive "
                          f"integer (seconds; default {DEFAULT_TIMEOUT_S})")
    return timedelta(seconds=seconds)


def check_pod_gpus() -> None:
    """Stop at once when the pod was given GPUs (POD_GPUS_ENV, set by the stack) that torch
    does not see: the job would otherwise train on the CPU, paying for idle GPUs, saying
    only `"device": "cpu"`. The usual cause is a CPU build of the image."""
    given = _env_int(POD_GPUS_ENV, 0)
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if given <= 0 or seen >= given:
        return
    pod = f"the pod was given {given} GPU(s) ({POD_GPUS_ENV}={given})"
    if torch.version.cuda is None:
        raise ConfigError(
            f"{pod} but this image's torch {torch.__version__} is the CPU build: build the "
            f"trainer image with --build-arg TORCH_VARIANT={GPU_TORCH_VARIANT} --build-arg "
            "TORCH_INDEX_URL= (buildImage true does so for gpusPerWorker > 0)", key=POD_GPUS_ENV)
    raise ConfigError(
        f"{pod} but torch {torch.__version__}, a CUDA {torch.version.cuda} build, sees "
        f"{seen}: the node's NVIDIA driver or device plugin did not expose them to the "
        "container (run nvidia-smi in the pod)", key=POD_GPUS_ENV)


def process_env() -> DistEnv:
    """This process's place in the job, from the environment, without joining anything:
    what a rank needs to know before deciding whether it needs its peers at all."""
    check_pod_gpus()
    use_cuda = torch.cuda.is_available()
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ConfigError(f"{name} must be set when WORLD_SIZE and RANK are "
                                 "(distributed init uses env://)")
        rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
        local_rank = _env_int("LOCAL_RANK", 0)
        local_world = _env_int("LOCAL_WORLD_SIZE", 1)
        dist_timeout()  # validated before anything blocks
    else:
        rank, world, local_rank, local_world = 0, 1, 0, 1
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistEnv(rank, world, local_rank, local_world, device)


def join(env: DistEnv) -> None:
    """Join the process group (a rendezvous with every peer) when the job has more than one."""
    if not ("WORLD_SIZE" in os.environ and "RANK" in os.environ):
        return
    timeout = dist_timeout()
    if env.device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
    backend = "nccl" if env.device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://",
                            rank=env.rank, world_size=env.world_size, timeout=timeout)
    log.info("joined process group: rank %d of %d (%s, master %s:%s, timeout %ds)", env.rank,
             env.world_size, backend, os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"],
             timeout.total_seconds())


def init_distributed() -> DistEnv:
    """Join the process group when the operator or torchrun asked for one."""
    env = process_env()
    join(env)
    return env


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait until every rank got here (no-op without a process group)."""
    if dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    found: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(found, obj)
    return found


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. which checkpoint to resume from)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_state(model: torch.nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of rank ``src``'s ``model`` copied into every rank's."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=src)


def average_buffers(model: torch.nn.Module) -> None:
    """Average BatchNorm running stats across ranks so every rank holds the same model."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)


def configure_cpu_threads(env: DistEnv, cgroup_root: CgroupView | Path | None = None) -> int:
    """Give each local process its share of the usable CPUs (unless OMP_NUM_THREADS says);
    ``cgroup_root`` as in trainer.limits.cpus.usable_cpus (default: this process's cgroups)."""
    if os.environ.get("OMP_NUM_THREADS"):
        threads = max(1, _env_int("OMP_NUM_THREADS", 1))
    else:
        threads = max(1, usable_cpus(cgroup_root) // max(1, env.local_world_size))
    torch.set_num_threads(threads)
    return threads
