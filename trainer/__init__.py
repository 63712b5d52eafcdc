"""trainstack trainer: `python -m trainer {buckets,ingest,train,promote,retrain}` and
`python -m trainer.launch`.

Rooms, lowest first (a room imports only rooms before it in this list):

- ``contract``: the seam the app and the stack import too (stdlib only): store key layout,
  version schema, records, errors, TrainConfig, environment names.
- ``store``: the storage seam (a local directory or any S3 API) and the run lease.
- ``limits``: the CPUs and memory the pod gives a process (its cgroups; stdlib only).
- ``data``: dataset readers, the one pixels function, augmentation, download and ingest,
  ``data.streaming`` for datasets larger than memory.
- ``models``: the model zoo.
- ``state``: the training state and its checkpoints.
- ``publish``: a trained run as a published version (program, meta.json, reference,
  figures, latest.json last); ``publish.gate`` is the promotion gate, ``publish.latest``
  latest.json's conditional writes, ``promote`` (top level) a person's promotion.
- ``tracking``: the progress record and MLflow.
- ``run``: the training run itself (loop, mid-epoch checkpoints, distributed setup,
  signals), which drives all of the above.
- ``retrain``: the retrain CronJob's command (the training job it creates through the
  Kubernetes API, one retrain of a model at a time); it reads ``publish.latest``.
"""
