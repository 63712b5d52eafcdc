"""The contracts between the trainer, the app and the stack, each defined once.

Stdlib only: the Pulumi program imports these without torch, the app without the trainer.
``layout`` spells every store key, ``datasets`` a dataset's name, ``schema`` a published
version (meta.json, metrics.json), ``records`` latest.json, claims, sequences and leases,
``errors`` the user-error hierarchy, ``config`` the TrainConfig and run identity, ``env``
the environment variables the stack sets and the image's torch variants, ``urls``
credential-free URLs for display and the download-URL rule, ``validate`` the helpers every
record's checks share. ``reporting``: what a run reports while it trains (the progress
record, the job's status for `kubectl`, MLflow names). ``lifecycle``: what happens to a
model after training (monitoring's records, the promotion gate's verdict, retrains).
"""
