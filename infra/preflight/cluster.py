"""The cluster the Kubernetes provider reaches, asked by the checks before `pulumi up`
registers anything (infra/preflight/): its kubeconfig, context and `kubernetes:cluster`
override, one try per request. A check that cannot ask (no kubeconfig, unreachable, not
allowed) says so at debug or info level and lets `up` go on: the provider reports those.
"""

from __future__ import annotations

import pulumi
import urllib3
from kubernetes.client.rest import ApiException

from infra.config.cluster import ClusterAccess

TIMEOUT_S = 10


# Unreachable, refused, not allowed, or an answer that is not what an API server sends (an
# auth proxy's 200 login page, JSON of another shape: the client's models raise ValueError
# or TypeError).
UNANSWERED = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError, TypeError,
              AttributeError, KeyError)


def connect(access: ClusterAccess, check: str):
    """An ApiClient for the provider's cluster, or None (said at debug level) when there is
    no usable cluster configuration."""
    import yaml
    from kubernetes.config import ConfigException

    try:
        return api_client(access)
    except (ConfigException, OSError, ValueError, yaml.YAMLError,
            TypeError, AttributeError, KeyError, IndexError) as exc:
        # No kubeconfig, an unknown context, a kubeconfig of the wrong shape (the client
        # trips over a number where it wants a mapping): the provider reports those itself.
        # Only ConfigException's own words: a YAML error quotes the line, maybe a token.
        said = str(exc) if isinstance(exc, ConfigException) else type(exc).__name__
        pulumi.log.debug(f"{check} skipped: no cluster configuration ({said})")
        return None


def api_client(access: ClusterAccess):
    import yaml
    from kubernetes import client
    from kubernetes.config import kube_config

    configuration = client.Configuration()
    text = access.kubeconfig
    if text and ("\n" in text or text.lstrip().startswith("{")):
        loaded = yaml.safe_load(text)
        if loaded is None:
            raise kube_config.ConfigException("Invalid kube-config dict. No configuration found.")
        loader = kube_config._get_kube_config_loader(config_dict=loaded,
                                                     active_context=access.context)
    else:
        loader = kube_config._get_kube_config_loader(
            filename=text or kube_config.KUBE_CONFIG_DEFAULT_LOCATION,
            active_context=access.context, persist_config=False)
    if access.cluster:
        # The provider's `kubernetes:cluster`: the context's user, this cluster. The client
        # has no such override; a name the kubeconfig lacks raises ConfigException.
        loader._cluster = loader._config["clusters"].get_with_name(access.cluster)["cluster"]
    loader.load_and_set(configuration)
    # One try per request: an unreachable cluster costs one timeout, not four.
    configuration.retries = False
    return client.ApiClient(configuration)


def reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else type(exc).__name__
