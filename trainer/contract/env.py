"""Environment variables the stack sets for the trainer and the app, named once.

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
