"""The contracts between the trainer, the app and the stack, each defined once.

Stdlib only: the Pulumi program imports these without torch, the app without the trainer.
``layout`` spells every store key, ``datasets`` a dataset's name, ``schema`` a published
version (meta.json, metrics.json), ``progress`` and ``records`` what the trainer writes while
it runs, ``errors`` the user-error hierarchy, ``config`` the TrainConfig and run identity,
``env`` the environment variables the stack sets, ``mlflow_layout`` MLflow names, ``urls``
credential-free URLs for display and the download-URL rule, ``image`` the trainer image's
torch variants.
"""
