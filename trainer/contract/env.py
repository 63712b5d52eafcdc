"""What the stack gives its workloads, named once: the environment variables it sets for the
trainer and the app, and the trainer image's torch variants.

Stdlib only: the Pulumi program imports it, and its environment has no torch.
"""

CACHE_DIR_ENV = "TRAINSTACK_DATA_CACHE_DIR"
"""Where a rank reads shards ahead into: the training pod's data-cache emptyDir
(infra.workloads.training)."""
CACHE_BYTES_ENV = "TRAINSTACK_DATA_CACHE_BYTES"
"""How many bytes of shards the read-ahead may hold there."""
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
"""The MLflow server workloads log to (unset: no tracking, mlflow never imported)."""
DATASET_SOURCE_ENV = "TRAINSTACK_DATASET_SOURCE"
"""The dataset's URL for `python -m trainer ingest` when --source is not given: the ingest
Job fills it from datasetSourceSecret's Secret (same key), so the URL, which may carry
credentials, is never on a command line."""
POD_GPUS_ENV = "TRAINSTACK_POD_GPUS"
"""How many GPUs (nvidia.com/gpu) the stack gave a training pod (gpusPerWorker; unset
without): a trainer that sees fewer stops at once instead of training on the CPU."""
NAMESPACE_ENV = "TRAINSTACK_NAMESPACE"
"""The pod's namespace (downward API): where the retrain Job creates the training job."""
RETRAIN_JOB_ENV = "TRAINSTACK_RETRAIN_JOB"
"""The retrain pod's own Job (downward API, label batch.kubernetes.io/job-name): its owner
is the CronJob the training job is owned by, its creation time the retrain's id."""


# The trainer image's torch variants, trainer/Dockerfile's TORCH_VARIANT build arg: the stack
# builds and checks them, a training pod given GPUs names the one it needs.
CPU_TORCH_VARIANT = "cpu"
"""The Dockerfile's default: torch from PyTorch's CPU index, no CUDA libraries."""
GPU_TORCH_VARIANT = "cu130"
"""For NVIDIA GPU nodes (with TORCH_INDEX_URL empty: the lock's CUDA build of torch): what
the stack builds for gpusPerWorker > 0, and what a prebuilt image for GPUs must be."""
