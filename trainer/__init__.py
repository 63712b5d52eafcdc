"""trainstack trainer: `python -m trainer {buckets,ingest,train}` and `python -m trainer.launch`.

Rooms, lowest first (a room imports only rooms above it in this list):

- ``contract``: the seam the app and the stack import too (stdlib only): store key layout,
  version schema, records, errors, TrainConfig, environment names.
- ``store``: the storage seam (a local directory or any S3 API) and the run lease.
- ``data``: dataset readers, the one pixels function, augmentation, download and ingest,
  ``data.streaming`` for datasets larger than memory.
- ``models``: the model zoo.
- ``publish``: a trained run as a published version (program, meta.json, figures).
- ``tracking``: the progress record and MLflow.
- ``run``: the training run itself (loop, checkpoints, distributed setup, limits).
"""
