"""The training operators the stack can install: the Kubeflow Training Operator (v1) and
Kubeflow Trainer v2 with JobSet, each from a pinned release; ``crds``: their
CustomResourceDefinitions are kept on `pulumi destroy` (deleting one deletes every job of
its kind on the cluster)."""
