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
- ``run``: the training run itself (loop, checkpoints, distributed setup), and above it
  ``publish`` (a trained run as a published version) and ``tracking`` (the progress record
  and MLflow), which read run.checkpoint's training state; run.train drives them both.
  ``publish.gate`` is the promotion gate, ``publish.promote`` a person's promotion.
- ``retrain``: the retrain CronJob's command (the training job it creates through the
  Kubernetes API, one retrain of a model at a time); it reads ``publish.latest`` and
  never imports ``run``.
"""
