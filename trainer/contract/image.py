"""The trainer image's torch variants, trainer/Dockerfile's TORCH_VARIANT build arg, named
once: the stack builds and checks them, a training pod given GPUs names the one it needs.
Stdlib only."""

CPU_TORCH_VARIANT = "cpu"
"""The Dockerfile's default: torch from PyTorch's CPU index, no CUDA libraries."""
GPU_TORCH_VARIANT = "cu130"
"""For NVIDIA GPU nodes (with TORCH_INDEX_URL empty: the lock's CUDA build of torch): what
the stack builds for gpusPerWorker > 0, and what a prebuilt image for GPUs must be."""
