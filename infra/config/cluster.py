"""Which cluster the Kubernetes provider reaches: its own `kubernetes:` config keys.

The checks before `pulumi up` (infra/preflight/) ask that cluster, not whatever the
current kubeconfig context happens to name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterAccess:
    """How the provider reaches the cluster: `kubernetes:kubeconfig` is a path or the
    kubeconfig itself; None for both means KUBECONFIG or ~/.kube/config. `cluster`
    (`kubernetes:cluster`) replaces the context's cluster, as the provider's override does."""

    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None


def cluster_access() -> ClusterAccess:
    """How the default Kubernetes provider reaches the cluster (its own config keys; the
    kubeconfig may be a secret, so it is read raw, never logged)."""
    from pulumi.runtime import config as runtime_config

    return ClusterAccess(kubeconfig=runtime_config.get_config("kubernetes:kubeconfig"),
                         context=runtime_config.get_config("kubernetes:context"),
                         cluster=runtime_config.get_config("kubernetes:cluster"))
