"""Before `pulumi up` registers anything: can the stack's volumes bind on this cluster?

MinIO's and MLflow's PersistentVolumeClaims name a StorageClass (`minioStorageClass`,
`mlflowStorageClass`) or none, and then the cluster's default class provisions them. On a
cluster with no default class (a bare kubeadm cluster, a new on-prem one) such a claim
stays Pending, its pod is never scheduled, and the provider waits in silence until its
timeout. So the program asks the cluster first, the way the provider would reach it
(`kubernetes:kubeconfig`, `kubernetes:context`, else KUBECONFIG or ~/.kube/config), and
stops with one line naming the key to set when a claim can never bind.

It only stops when it knows: a cluster it cannot reach, or whose StorageClasses it may not
list, is left to the provider (logged). A claim that is already Bound, or a cluster with
an Available PersistentVolume of no class (static provisioning), passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pulumi

from infra import minio_server, mlflow_server
from infra.config_errors import StackConfigError
from infra.stack_config import StackConfig

DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")
TIMEOUT_S = 10
UNKNOWN_VOLUMES = 2**31  # PersistentVolumes that cannot be listed: assume enough


@dataclass(frozen=True)
class Claim:
    """One PersistentVolumeClaim the stack will create."""

    key: str  # the stack key that names its StorageClass, e.g. minioStorageClass
    owner: str  # who needs it, for the message: "MinIO's volume"
    name: str  # the claim's name in the stack's namespace
    storage_class: str | None  # None: the cluster's default class


@dataclass(frozen=True)
class ClusterStorage:
    """What the cluster has, as far as the claims are concerned."""

    classes: Mapping[str, bool]  # StorageClass name -> is it marked default
    classless_volumes: int  # Available PersistentVolumes with no storageClassName
    bound_claims: frozenset[str]  # the stack's claims that exist and are Bound


@dataclass(frozen=True)
class ClusterAccess:
    """How the provider reaches the cluster: `kubernetes:kubeconfig` is a path or the
    kubeconfig itself; None for both means KUBECONFIG or ~/.kube/config."""

    kubeconfig: str | None = None
    context: str | None = None


def stack_claims(cfg: StackConfig) -> list[Claim]:
    """The claims `pulumi up` will create on the cluster; none in render mode (the cluster
    that applies the files is not the one the provider would reach)."""
    if cfg.render_yaml_to:
        return []
    claims = []
    if not cfg.store_endpoint:
        claims.append(Claim("minioStorageClass", "MinIO's volume", minio_server.PVC_NAME,
                            cfg.minio_storage_class))
    if cfg.mlflow:
        claims.append(Claim("mlflowStorageClass", "MLflow's volume", mlflow_server.PVC_NAME,
                            cfg.mlflow_storage_class))
    return claims


def claims_problem(claims: Iterable[Claim], storage: ClusterStorage
                   ) -> StackConfigError | None:
    """The error for the first claim that cannot bind on `storage`; None when all can."""
    names = ", ".join(sorted(storage.classes)) or "none"
    defaults = [name for name, is_default in storage.classes.items() if is_default]
    classless = storage.classless_volumes  # each binds one claim
    for claim in claims:
        if claim.name in storage.bound_claims:
            continue
        if claim.storage_class is not None:
            if claim.storage_class not in storage.classes:
                return StackConfigError(
                    f"invalid config trainstack:{claim.key} = '{claim.storage_class}': the "
                    f"cluster has no StorageClass of that name (it has: {names})", key=claim.key)
            continue
        if defaults:
            continue
        if classless > 0:
            classless -= 1
            continue
        return StackConfigError(
                f"{claim.owner} (PersistentVolumeClaim {claim.name}) would wait Pending "
                f"forever: the cluster has no default StorageClass (it has: {names}). Set "
                f"one for the stack: pulumi config set {claim.key} <name>, or mark one "
                "default: kubectl patch storageclass <name> -p '{\"metadata\": "
                f"{{\"annotations\": {{\"{DEFAULT_CLASS_ANNOTATIONS[0]}\": \"true\"}}}}}}'"
                " (docs/operations.md, \"Storage\")", key=claim.key)
    return None


def check_storage(cfg: StackConfig, access: ClusterAccess) -> None:
    """Raise StackConfigError when one of the stack's claims can never bind on the
    provider's cluster; return when all can, or when the cluster cannot be asked."""
    claims = stack_claims(cfg)
    if not claims:
        return
    storage = read_cluster_storage(access, cfg.namespace, [c.name for c in claims])
    if storage is None:
        return
    problem = claims_problem(claims, storage)
    if problem:
        raise problem


def read_cluster_storage(access: ClusterAccess, namespace: str,
                         claim_names: list[str]) -> ClusterStorage | None:
    """StorageClasses, classless Available volumes and Bound claims; None when the
    cluster cannot be asked (unreachable, no kubeconfig, not allowed to list)."""
    import urllib3
    import yaml
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from kubernetes.config import ConfigException

    # ...or an answer that is not what an API server sends (an auth proxy's 200 login
    # page, JSON of another shape): the client's models raise ValueError or TypeError.
    unanswered = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError, TypeError,
                  AttributeError, KeyError)
    try:
        api = _api_client(access)
    except (ConfigException, OSError, ValueError, yaml.YAMLError,
            TypeError, AttributeError, KeyError, IndexError) as exc:
        # No kubeconfig, an unknown context, a kubeconfig of the wrong shape (the client
        # trips over a number where it wants a mapping): the provider reports those itself.
        # Only ConfigException's own words: a YAML error quotes the line, maybe a token.
        said = str(exc) if isinstance(exc, ConfigException) else type(exc).__name__
        pulumi.log.debug(f"storage check skipped: no cluster configuration ({said})")
        return None
    with api:
        storage_api, core = client.StorageV1Api(api), client.CoreV1Api(api)
        try:
            classes = {
                item.metadata.name: _is_default(item.metadata.annotations or {})
                for item in storage_api.list_storage_class(_request_timeout=TIMEOUT_S).items
            }
        except unanswered as exc:  # 403 for a namespaced user, an unreachable server
            pulumi.log.info("the stack's volumes were not checked: cannot list StorageClasses "
                            f"({_reason(exc)})")
            return None
        return ClusterStorage(classes, _classless_volumes(core, classes, unanswered),
                              _bound_claims(core, namespace, claim_names, unanswered))


def _api_client(access: ClusterAccess):
    import yaml
    from kubernetes import client, config

    configuration = client.Configuration()
    text = access.kubeconfig
    if text and ("\n" in text or text.lstrip().startswith("{")):
        config.load_kube_config_from_dict(yaml.safe_load(text), context=access.context,
                                          client_configuration=configuration)
    else:
        config.load_kube_config(config_file=text or None, context=access.context,
                                client_configuration=configuration, persist_config=False)
    # One try per request: an unreachable cluster costs one timeout, not four.
    configuration.retries = False
    return client.ApiClient(configuration)


def _is_default(annotations: Mapping[str, str]) -> bool:
    return any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS)


def _classless_volumes(core, classes: Mapping[str, bool], unanswered) -> int:
    if any(classes.values()):
        return 0  # not needed: a default class exists
    try:
        volumes = core.list_persistent_volume(_request_timeout=TIMEOUT_S).items
        return sum(1 for pv in volumes if not pv.spec.storage_class_name and pv.status
                   and pv.status.phase == "Available")
    except unanswered as exc:  # may not list volumes: assume some, do not stop
        pulumi.log.debug(f"cannot list PersistentVolumes ({_reason(exc)})")
        return UNKNOWN_VOLUMES


def _bound_claims(core, namespace: str, names: list[str], unanswered) -> frozenset[str]:
    bound = set()
    for name in names:
        try:
            claim = core.read_namespaced_persistent_volume_claim(
                name, namespace, _request_timeout=TIMEOUT_S)
            if claim.status and claim.status.phase == "Bound":
                bound.add(name)
        except unanswered:  # absent (the first `up`) or not readable: not bound
            pass
    return frozenset(bound)


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else type(exc).__name__
