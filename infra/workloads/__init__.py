"""The workloads of the namespace, one ComponentResource each: the store (``store``: MinIO,
the bucket Job), MLflow (``tracking``), the training job (PyTorchJob or TrainJob;
``jobparts``: its ingest Job, Kueue queue and progress Role), the web app and the trainer
image; ``catalog`` names who runs there, ``pod`` the hardened pod template every one of
them shares, ``rotation`` the Secrets and ConfigMaps they read, named by a digest of their
content so a new value rolls exactly their readers."""
