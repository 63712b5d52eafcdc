"""Before `pulumi up` registers anything: can the stack's volumes bind on this cluster?

MinIO's and MLflow's PersistentVolumeClaims name a StorageClass (`minioStorageClass`,
`mlflowStorageClass`) or none, and then the cluster's default class provisions them. On a
cluster with no default class (a bare kubeadm cluster, a new on-prem one) such a claim
stays Pending, its pod is never scheduled, and the provider waits in silence until its
timeout. So the program asks the cluster first, the way the provider would reach it
(`kubernetes:kubeconfig`, `kubernetes:context`, `kubernetes:cluster`, else KUBECONFIG or
~/.kube/config), and stops with one line naming the key to set when a claim can never bind.

It only stops when it knows: a cluster it cannot reach, or whose StorageClasses it may not
list, is left to the provider (logged). A claim that is already Bound passes, and so does
one an Available PersistentVolume of no class (static provisioning) would bind: as the
volume binder does, each such volume binds one claim it fits (ReadWriteOnce, a filesystem,
at least the claim's size, not reserved for another claim), the smallest that fits first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pulumi

from infra.config.cluster import ClusterAccess
from infra.config.errors import StackConfigError
from infra.config.stack_config import StackConfig
from infra.preflight.cluster import TIMEOUT_S, UNANSWERED, connect, reason
from infra.workloads.store import minio_server
from infra.workloads.tracking import mlflow_server

DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")


@dataclass(frozen=True)
class Claim:
    """One PersistentVolumeClaim the stack will create."""

    key: str  # the stack key that names its StorageClass, e.g. minioStorageClass
    owner: str  # who needs it, for the message: "MinIO's volume"
    name: str  # the claim's name in the stack's namespace
    storage_class: str | None  # None: the cluster's default class
    size: str  # its request, a quantity such as 10Gi


@dataclass(frozen=True)
class Volume:
    """An Available PersistentVolume of no class, as far as binding a claim goes."""

    name: str
    capacity: int  # bytes
    read_write_once: bool  # its access modes include ReadWriteOnce (the stack's claims')
    filesystem: bool  # volumeMode Filesystem (the default), not Block
    reserved_for: str | None  # a claim of the stack's namespace its claimRef names

    def binds(self, claim: Claim) -> bool:
        return (self.read_write_once and self.filesystem
                and self.reserved_for in (None, claim.name)
                and self.capacity >= _bytes(claim.size))


@dataclass(frozen=True)
class ClusterStorage:
    """What the cluster has, as far as the claims are concerned."""

    classes: Mapping[str, bool]  # StorageClass name -> is it marked default
    # Available PersistentVolumes with no storageClassName; None: they could not be listed
    # (then they are assumed to fit: the check only stops when it knows)
    classless_volumes: tuple[Volume, ...] | None
    bound_claims: frozenset[str]  # the stack's claims that exist and are Bound
    # their storageClassName (a Bound claim stays only while the config names no other
    # class: the field is immutable, so pulumi-kubernetes replaces a claim whose class changes)
    bound_classes: Mapping[str, str | None] = field(default_factory=dict)


def stack_claims(cfg: StackConfig) -> list[Claim]:
    """The claims `pulumi up` will create on the cluster; none in render mode (the cluster
    that applies the files is not the one the provider would reach)."""
    if cfg.render_yaml_to:
        return []
    claims = []
    if not cfg.store_endpoint:
        claims.append(Claim("minioStorageClass", "MinIO's volume", minio_server.PVC_NAME,
                            cfg.minio_storage_class, cfg.minio_volume_size))
    if cfg.mlflow:
        claims.append(Claim("mlflowStorageClass", "MLflow's volume", mlflow_server.PVC_NAME,
                            cfg.mlflow_storage_class, mlflow_server.VOLUME_SIZE))
    return claims


def claims_problem(claims: Iterable[Claim], storage: ClusterStorage
                   ) -> StackConfigError | None:
    """One error naming every claim that cannot bind on `storage` (a `pulumi up` that stops
    for one and then, fixed, for the next would cost a run each); None when all can."""
    names = ", ".join(sorted(storage.classes)) or "none"
    defaults = [name for name, is_default in storage.classes.items() if is_default]
    free = None if storage.classless_volumes is None else list(storage.classless_volumes)
    unknown: list[Claim] = []  # name a StorageClass the cluster lacks
    unbound: list[tuple[Claim, list[Volume]]] = []  # want the default: none, no volume fits
    for claim in claims:
        if claim.name in storage.bound_claims and claim.storage_class in (
                None, storage.bound_classes.get(claim.name, claim.storage_class)):
            continue
        if claim.storage_class is not None:
            if claim.storage_class not in storage.classes:
                unknown.append(claim)
            continue
        if defaults or free is None:
            continue
        fitting = sorted((v for v in free if v.binds(claim)),
                         key=lambda v: (v.reserved_for != claim.name, v.capacity))
        if fitting:
            free.remove(fitting[0])  # it binds this claim and no other
            continue
        unbound.append((claim, list(free)))
    parts = [f"invalid config trainstack:{claim.key} = '{claim.storage_class}': the cluster "
             f"has no StorageClass of that name (it has: {names})" for claim in unknown]
    if unbound:
        parts.append(_pending_forever(unbound, names))
    if not parts:
        return None
    return StackConfigError("; ".join(parts), key=(unknown or [unbound[0][0]])[0].key)


def _pending_forever(unbound: list[tuple[Claim, list[Volume]]], names: str) -> str:
    """Why claims that want the default StorageClass would never bind, and what to set."""
    several = len(unbound) > 1
    subjects = " and ".join(f"{c.owner} (PersistentVolumeClaim {c.name})" for c, _ in unbound)
    notes = "".join(_volumes_note(c, free, several) for c, free in unbound)
    settings = " and ".join(f"pulumi config set {c.key} <name>" for c, _ in unbound)
    return (f"{subjects} would wait Pending forever: the cluster has no default StorageClass "
            f"(it has: {names}){notes}. Set one for the stack: {settings}, or mark one "
            "default: kubectl patch storageclass <name> -p '{\"metadata\": "
            f"{{\"annotations\": {{\"{DEFAULT_CLASS_ANNOTATIONS[0]}\": \"true\"}}}}}}'"
            " (docs/operations.md, \"Storage\")")


def _volumes_note(claim: Claim, free: list[Volume], several: bool = False) -> str:
    """Why the Available volumes of no class the cluster does have do not bind it."""
    if not free:
        return ""
    largest = max(free, key=lambda v: v.capacity)
    which = f"the claim of {claim.owner}" if several else "the claim"
    return (f" and none of its {len(free)} Available PersistentVolume(s) of no class fits "
            f"{which} (ReadWriteOnce, a filesystem, at least {claim.size}; the largest: "
            f"{largest.name}, {_gib(largest.capacity)})")


def _bytes(quantity: str) -> int:
    from kubernetes.utils import parse_quantity

    return int(parse_quantity(quantity))


def _gib(size: int) -> str:
    return f"{size / 2**30:.3g}Gi"


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
    from kubernetes import client

    api = connect(access, "storage check")
    if api is None:
        return None
    with api:
        storage_api, core = client.StorageV1Api(api), client.CoreV1Api(api)
        try:
            classes = {
                item.metadata.name: _is_default(item.metadata.annotations or {})
                for item in storage_api.list_storage_class(_request_timeout=TIMEOUT_S).items
            }
        except UNANSWERED as exc:  # 403 for a namespaced user, an unreachable server
            pulumi.log.info("the stack's volumes were not checked: cannot list StorageClasses "
                            f"({reason(exc)})")
            return None
        bound = _bound_claims(core, namespace, claim_names)
        return ClusterStorage(
            classes, _classless_volumes(core, classes, namespace, claim_names),
            frozenset(bound), bound)


def _is_default(annotations: Mapping[str, str]) -> bool:
    return any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS)


def _classless_volumes(core, classes: Mapping[str, bool], namespace: str,
                       claim_names: list[str]) -> tuple[Volume, ...] | None:
    if any(classes.values()):
        return ()  # not needed: a default class exists
    try:
        listed = core.list_persistent_volume(_request_timeout=TIMEOUT_S).items
        volumes = []
        for pv in listed:
            if pv.spec.storage_class_name or not pv.status or pv.status.phase != "Available":
                continue
            ref = pv.spec.claim_ref
            if ref is not None and (ref.namespace != namespace or ref.name not in claim_names):
                continue  # reserved for a claim that is not the stack's
            volumes.append(Volume(
                pv.metadata.name, _bytes((pv.spec.capacity or {}).get("storage", "0")),
                "ReadWriteOnce" in (pv.spec.access_modes or []),
                (pv.spec.volume_mode or "Filesystem") == "Filesystem",
                ref.name if ref is not None else None))
        return tuple(volumes)
    except UNANSWERED as exc:  # may not list volumes: assume they fit, do not stop
        pulumi.log.debug(f"cannot list PersistentVolumes ({reason(exc)})")
        return None


def _bound_claims(core, namespace: str, names: list[str]) -> dict[str, str | None]:
    """The Bound ones of the claims, with their storageClassName."""
    bound = {}
    for name in names:
        try:
            claim = core.read_namespaced_persistent_volume_claim(
                name, namespace, _request_timeout=TIMEOUT_S)
            if claim.status and claim.status.phase == "Bound":
                bound[name] = claim.spec.storage_class_name if claim.spec else None
        except UNANSWERED:  # absent (the first `up`) or not readable: not bound
            pass
    return bound
