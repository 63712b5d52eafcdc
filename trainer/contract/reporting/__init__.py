"""What a run reports while it trains, and where. Stdlib only.

``progress``: the progress record in the store (the app's Training tab reads it);
``job_status``: the same summary as the training job shows it to `kubectl` (Trainer v2's
status server, a PyTorchJob's annotation); ``mlflow_layout``: MLflow's names (experiments,
tags, aliases).
"""
