"""The contracts between the trainer, the app and the stack, each defined once.

Stdlib only: the Pulumi program imports these without torch, the app without the trainer.
``layout`` spells every store key, ``datasets`` a dataset's name, ``schema`` a published
version (meta.json, metrics.json), ``progress`` and ``records`` what the trainer writes while
it runs, ``job_status`` the run's progress as the training job shows it to `kubectl`,
``errors`` the user-error hierarchy, ``config`` the TrainConfig and run identity, ``env``
the environment variables the stack sets and the image's torch variants, ``mlflow_layout``
MLflow names, ``urls`` credential-free URLs for display and the download-URL rule,
``validate`` the helpers every record's checks share. ``lifecycle``: what happens to a
model after training (monitoring's records, the promotion gate's verdict, retrains).
"""
