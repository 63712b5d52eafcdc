"""Render the Pulumi stack under Pulumi's mocks: no cluster, Docker, CLI or network.

    rendering = render(config)           # config as `pulumi config set` stores it
    objects = render_stack(config)       # just the Kubernetes objects, keyed "Kind/name"

`config` maps keys without the `trainstack:` prefix to strings ({"workers": "3"}); values
listed in `secrets` (default: the stack's secret keys) are passed as secret config, as
`pulumi config set --secret` would. Objects are plain dicts in Kubernetes' own camelCase
shape (apiVersion, kind, metadata, spec/data/stringData), exactly the inputs the program
gave pulumi-kubernetes, secret values unwrapped.

A provider-side component's `transforms` option is run on its stand-in children as the
engine runs it (`Registration.retain_on_delete` records the outcome), and
`Rendering.retained_child()` runs it on any manifest, e.g. the real overlay's.

`Rendering.destroy_order()` is the order `pulumi destroy` deletes in, derived from the
recorded registrations with the engine's own rules (pulumi/pulumi
pkg/resource/graph/dependency_graph.go DependenciesOf, deploy/step_generator.go
ScheduleDeletes).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config

from infra.config.keys import NAMESPACE, SECRET_KEYS, load
from infra.stack import build_stack

PROJECT, STACK = "trainstack", "dev"
MOCK_RANDOM_PASSWORD = "mock-random-password-7d1f0c2b9e8a4f5d"
DIRECTORY_TYPE = "kubernetes:kustomize/v2:Directory"
# What pulumi-kubernetes' Construct registers under an operator's kustomize Directory
# (a remote component: under mocks nobody constructs it), parented to it and registered
# before the Directory's own registration returns, as the provider does. By Directory name.
OPERATOR_CHILDREN = {
    "training-operator": (
        ("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
         "training-operator-pytorchjobs.kubeflow.org"),
        ("kubernetes:apps/v1:Deployment", "training-operator-kubeflow/training-operator"),
    ),
    "kubeflow-trainer": (
        ("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
         "kubeflow-trainer-trainjobs.trainer.kubeflow.org"),
        ("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
         "kubeflow-trainer-jobsets.jobset.x-k8s.io"),
        ("kubernetes:apps/v1:Deployment",
         "kubeflow-trainer-kubeflow-system/kubeflow-trainer-controller-manager"),
        ("kubernetes:apps/v1:Deployment",
         "kubeflow-trainer-kubeflow-system/jobset-controller-manager"),
    ),
}


@dataclass
class Registration:
    """One registered resource, as the engine would see it."""

    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    remote: bool
    inputs: dict[str, Any]
    dependencies: list[str]
    replace_on_changes: list[str]
    delete_before_replace: bool
    secret_props: list[str]  # top-level inputs that carried a secret
    provider: str = ""  # "<provider urn>::<id>"; "" = the default provider
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    custom_timeouts: dict[str, str] = field(default_factory=dict)  # create/update/delete
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (name, type) it was before
    order: int = 0  # position in the state (registration order)
    retain_on_delete: bool = False  # `pulumi destroy` forgets it and leaves it in the cluster

    @property
    def provider_urn(self) -> str:
        return self.provider.rsplit("::", 1)[0] if self.provider else ""


@dataclass
class Rendering:
    objects: dict[str, dict[str, Any]]  # "Kind/name" -> manifest
    resources: dict[str, Registration]  # urn -> registration
    exports: dict[str, Any]
    secret_values: list[str] = field(default_factory=list)  # every secret string seen
    # "Kind/name" -> the fields a server-side-apply patch (DeploymentPatch, ...) sets on an
    # object someone else made: not whole objects, so not in `objects`.
    patches: dict[str, dict[str, Any]] = field(default_factory=dict)
    transforms: dict[str, list] = field(default_factory=dict)  # urn -> `transforms` option

    def retained_child(self, parent: str, manifest: dict[str, Any]) -> bool:
        """Whether the engine would register `manifest` as a child of the provider-side
        component `parent` (an operator's overlay) with retainOnDelete."""
        opts = transformed_options(self.transforms, self.resources, parent,
                                   type_token(manifest), manifest["metadata"]["name"])
        return bool(opts.retain_on_delete)

    def by_type(self, type_token: str) -> list[Registration]:
        return [r for r in self.resources.values() if r.type == type_token]

    def urn_of(self, kind: str, name: str) -> str:
        return next(r.urn for r in self.resources.values() if _key(r.inputs) == f"{kind}/{name}")

    def registration(self, kind: str, name: str) -> Registration:
        return self.resources[self.urn_of(kind, name)]

    def dependencies_of(self, r: Registration) -> set[str]:
        """The engine's DependenciesOf: provider, parent, dependencies, property
        dependencies, and for a component dependency its children registered before `r`."""
        direct = set(r.dependencies) | {u for us in r.property_dependencies.values() for u in us}
        if r.provider_urn:
            direct.add(r.provider_urn)
        found = {r.parent} if r.parent in self.resources else set()
        for urn in direct & set(self.resources):
            found.add(urn)
            if not self.resources[urn].custom:
                found |= {c for c in self.descendants(urn) if self.resources[c].order < r.order}
        return found

    def descendants(self, urn: str) -> set[str]:
        children = {r.urn for r in self.resources.values() if r.parent == urn}
        return children.union(*(self.descendants(c) for c in children)) if children else set()

    def destroy_order(self) -> list[set[str]]:
        """What `pulumi destroy` deletes, in steps: every URN of a step is deleted (in
        parallel) only after every step before it is done."""
        condemned = {u for u, r in self.resources.items() if r.type != "pulumi:pulumi:Stack"}
        deps = {u: self.dependencies_of(self.resources[u]) & condemned for u in condemned}
        steps = []
        while condemned:
            step = {u for u in condemned if not deps[u] & condemned}
            assert step, f"dependency cycle among {condemned}"
            steps.append(step)
            condemned -= step
        return steps[::-1]

    def destroy_step(self, urn: str) -> int:
        return next(i for i, step in enumerate(self.destroy_order()) if urn in step)


def transformed_options(transforms: dict[str, list], registrations: dict[str, Registration],
                        parent: str, typ: str, name: str) -> pulumi.ResourceOptions:
    """A child's options after the `transforms` of its parent and every ancestor, run as
    the engine runs them for a provider-side component's children (nearest first)."""
    opts = pulumi.ResourceOptions()
    while parent in transforms:
        for transform in transforms[parent]:
            result = transform(pulumi.ResourceTransformArgs(True, typ, name, {}, opts))
            if result is not None:
                opts = result.opts
        parent = registrations[parent].parent if parent in registrations else ""
    return opts


def type_token(manifest: dict[str, Any]) -> str:
    """pulumi-kubernetes' type token of a manifest: `kubernetes:<group|core>/<v>:<Kind>`."""
    group, _, version = manifest["apiVersion"].rpartition("/")
    return f"kubernetes:{group or 'core'}/{version}:{manifest['kind']}"


def _key(inputs: dict[str, Any]) -> str | None:
    kind, meta = inputs.get("kind"), inputs.get("metadata") or {}
    return f"{kind}/{meta.get('name')}" if kind and meta.get("name") else None


def _unwrap(value: Any, found: list[str]) -> Any:
    """Strip Pulumi's secret markers (recording the raw strings) from deserialized inputs."""
    if rpc.is_rpc_secret(value):
        raw = _unwrap(rpc.unwrap_rpc_secret(value), [])
        found.extend(_strings(raw))
        return raw
    if isinstance(value, dict):
        return {k: _unwrap(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, found) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Structs carry every number as a double
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


class _Mocks(pulumi.runtime.Mocks):
    """Outputs a real deployment would fill in (digests, generated passwords). `rotated`:
    the RandomPasswords (by name) whose result is regenerated, as `pulumi up --replace`."""

    def __init__(self, rotated: tuple[str, ...] = ()):
        self.rotated = rotated
        # The `transforms` of the registration this thread is in (the mock monitor resolves
        # them to the program's functions and hands them over here only).
        self.current = threading.local()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.current.transforms = list(args.transforms)
        state = dict(args.inputs)
        if args.typ == "docker:index/image:Image":
            repo = state["imageName"].rsplit(":", 1)[0]
            digest = hashlib.sha256(state["imageName"].encode()).hexdigest()
            state.update(repoDigest=f"{repo}@sha256:{digest}", baseImageName=state["imageName"])
        elif args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = (f"{MOCK_RANDOM_PASSWORD}-rotated" if args.name in self.rotated
                               else MOCK_RANDOM_PASSWORD)
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, plus what it drops: parents, dependencies, replacement options."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registrations: dict[str, Registration] = {}
        self.secret_values: list[str] = []
        self.transforms: dict[str, list] = {}  # urn -> its `transforms` option's functions

    def RegisterResource(self, request):
        self.mocks.current.transforms = []  # the Stack's registration never reaches new_resource
        response = super().RegisterResource(request)
        raw = rpc.deserialize_properties(request.object)
        secret_props = [k for k, v in raw.items() if rpc.is_rpc_secret(v)]
        self.transforms[response.urn] = self.mocks.current.transforms
        if request.remote and request.type == DIRECTORY_TYPE:
            for typ, name in OPERATOR_CHILDREN[request.name]:  # by Construct, before the reply
                urn = self.make_urn(response.urn, typ, name)
                opts = transformed_options(self.transforms, self.registrations,
                                           response.urn, typ, name)
                self._record(Registration(urn, typ, name, response.urn, True, False, {}, [], [],
                                          False, [], provider=request.provider,
                                          retain_on_delete=bool(opts.retain_on_delete)))
        timeouts = request.customTimeouts
        self._record(Registration(
            urn=response.urn,
            type=request.type,
            name=request.name,
            parent=request.parent,
            custom=request.custom,
            remote=request.remote,
            inputs=_unwrap(raw, self.secret_values),
            dependencies=list(request.dependencies),
            replace_on_changes=list(request.replaceOnChanges),
            delete_before_replace=request.deleteBeforeReplace,
            secret_props=secret_props,
            provider=request.provider,
            property_dependencies={k: list(v.urns)
                                   for k, v in request.propertyDependencies.items()},
            custom_timeouts={k: getattr(timeouts, k) for k in ("create", "update", "delete")
                             if getattr(timeouts, k)},
            aliases=[(a.spec.name, a.spec.type) for a in request.aliases
                     if a.WhichOneof("alias") == "spec"],
            retain_on_delete=request.retainOnDelete,
        ))
        return response

    def _record(self, registration: Registration) -> None:
        registration.order = len(self.registrations)
        self.registrations[registration.urn] = registration


def render(config: dict[str, str], secrets: tuple[str, ...] = SECRET_KEYS,
           rotated: tuple[str, ...] = (), cluster=None) -> Rendering:
    """Run the program (infra/__main__.py's load + build_stack) under mocks; `rotated`
    names generated passwords that get a new value; `cluster` (a ClusterAccess) is what
    the program asks about the created job, as `up` does (none by default)."""
    mocks = _Mocks(rotated)
    monitor = _RecordingMonitor(mocks)
    pulumi_settings.ROOT.set(None)  # a fresh root stack per rendering
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=STACK, preview=False, monitor=monitor)
    set_all_config(
        {f"{NAMESPACE}:{k}": v for k, v in config.items()},
        secret_keys=[f"{NAMESPACE}:{k}" for k in secrets if k in config],
    )
    exports: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        settings, secret_values = load()
        outputs = build_stack(settings, secret_values, cluster)
        return pulumi.Output.all(**outputs).apply(exports.update)

    program()
    registrations = monitor.registrations
    kube = [r for r in registrations.values()
            if r.custom and r.type.startswith("kubernetes:") and _key(r.inputs)]
    objects = {_key(r.inputs): r.inputs for r in kube if not r.type.endswith("Patch")}
    patches = {_key(r.inputs): r.inputs for r in kube if r.type.endswith("Patch")}
    secret_values = monitor.secret_values + [config[k] for k in secrets if k in config]
    return Rendering(objects, registrations, exports, sorted(set(secret_values)), patches,
                     monitor.transforms)


def render_stack(config: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The rendered Kubernetes objects only, keyed "Kind/name" (e.g. "Job/trainstack-buckets")."""
    return render(config).objects


if __name__ == "__main__":  # handy: python tests/infra/render.py '{"workers": "3"}'
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(json.dumps(render_stack(cfg), indent=2, sort_keys=True))
