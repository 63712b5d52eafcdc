"""The training operators the stack can install: the Kubeflow Training Operator (v1) and
Kubeflow Trainer v2 with JobSet, each from a pinned release."""
