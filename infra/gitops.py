"""Render mode (`renderYamlTo`): YAML files for Argo CD or Flux instead of a live cluster.

One pulumi-kubernetes Provider with `renderYamlToDirectory` is used by every Kubernetes
object (components pass it to their children through `providers`). It writes
`<dir>/1-manifest/<apiVersion>-<kind>-<namespace>-<name>.yaml` (CRDs under 0-crd/) and
never contacts a cluster, so nothing is awaited and Pulumi's dependency order is lost.
What the files carry instead, for a GitOps tool to apply them in the same order:

- `argocd.argoproj.io/sync-wave`: namespace, NetworkPolicies and store 0, bucket Job 1, ingest
  Job, the app, the MLflow server and a TrainingRuntime 2, the PyTorchJob or TrainJob 3. Argo CD applies a wave only after the previous one is healthy
  (a Job is healthy once complete). Flux applies one directory at once (docs/operations.md).
- Jobs: `argocd.argoproj.io/sync-options: Force=true,Replace=true` and
  `kustomize.toolkit.fluxcd.io/force: enabled`, because a Job's pod template is immutable
  and a new image or source must replace it (Pulumi replaces it itself).
"""

from __future__ import annotations

import copy

import pulumi
import pulumi_kubernetes as k8s

SYNC_WAVE = "argocd.argoproj.io/sync-wave"
JOB_TYPE = "kubernetes:batch/v1:Job"
PYTORCHJOB_TYPE = "kubernetes:kubeflow.org/v1:PyTorchJob"
# A component's objects go in its wave; these types in their own.
WAVES = {"namespace": 0, "fences": 0, "store": 0, "buckets": 1, "inference": 2, "training": 2,
         "mlflow": 2, "monitoring": 3}
TRAINJOB_TYPE = "kubernetes:trainer.kubeflow.org/v1alpha1:TrainJob"
# The job after the app and the TrainJob's runtime (wave 2), which its webhook looks up.
TYPE_WAVES = {PYTORCHJOB_TYPE: 3, TRAINJOB_TYPE: 3}
FORCE_REPLACE = {
    "argocd.argoproj.io/sync-options": "Force=true,Replace=true",
    "kustomize.toolkit.fluxcd.io/force": "enabled",
}


def render_provider(directory: str) -> k8s.Provider:
    """Every object to `directory`; `always_render` rewrites unchanged files too, so the
    directory is complete after every `pulumi up`, even in a fresh CI checkout."""
    return k8s.Provider("render-yaml", render_yaml_to_directory=directory, always_render=True)


def options(part: str, provider: k8s.Provider | None) -> pulumi.ResourceOptions:
    """The options a top-level resource or component of `part` is created with."""
    if provider is None:
        return pulumi.ResourceOptions()
    return pulumi.ResourceOptions(providers={"kubernetes": provider},
                                  transformations=[_annotate(WAVES[part])])


def _annotate(wave: int):
    def transform(args: pulumi.ResourceTransformationArgs):
        if not args.type_.startswith("kubernetes:") or "metadata" not in args.props:
            return None
        extra = {SYNC_WAVE: str(TYPE_WAVES.get(args.type_, wave))}
        if args.type_ == JOB_TYPE:
            extra.update(FORCE_REPLACE)
        props = dict(args.props)
        props["metadata"] = _with_annotations(props["metadata"], extra)
        return pulumi.ResourceTransformationResult(props, args.opts)

    return transform


def _with_annotations(metadata, extra: dict[str, str]):
    # A copy: one ObjectMetaArgs may be shared by several objects (the app's Deployment
    # and Service).
    if isinstance(metadata, dict):
        return {**metadata, "annotations": {**(metadata.get("annotations") or {}), **extra}}
    metadata = copy.copy(metadata)
    pulumi.set(metadata, "annotations", {**(metadata.annotations or {}), **extra})
    return metadata
