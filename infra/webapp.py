"""Inference: the Gradio/FastAPI app as a Deployment + Service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra import pod

PORT = 7860
NAME = "inference"


@dataclass
class InferenceArgs:
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    store: pod.StoreRef
    model_name: str  # <model>-<dataset>
    replicas: int = 1
    service_type: str = "NodePort"
    image_pull_policy: str = "IfNotPresent"
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)  # MinIO


def _probe(path: str, delay: int, failures: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port="http"),
        initial_delay_seconds=delay,
        period_seconds=10,
        timeout_seconds=5,
        failure_threshold=failures,
    )


def access_hint(namespace: str, service_type: str) -> str:
    """How a user reaches the app from outside the cluster, for any cluster."""
    svc = f"kubectl -n {namespace} get svc {NAME}"
    if service_type == "NodePort":
        # minikube's node IP is not reachable from every host (docker driver): its own
        # command opens a tunnel; elsewhere any node's address with the nodePort works.
        return (f"{svc}   # http://<node-ip>:<nodePort> "
                f"(minikube: minikube service {NAME} -n {namespace} --url)")
    if service_type == "LoadBalancer":
        return f"{svc}   # http://<EXTERNAL-IP>:{PORT}"
    return (f"kubectl -n {namespace} port-forward svc/{NAME} {PORT}:{PORT}"
            f"   # http://localhost:{PORT}")


def _container(args: InferenceArgs) -> pod.ContainerSpec:
    return pod.ContainerSpec(
        name=NAME,
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        command=["python", "-m", "inference", "serve", "--host", "0.0.0.0", "--port", str(PORT)],
        store=args.store,
        cpu="500m",
        memory="1Gi",
        cpu_limit="2",
        memory_limit="2Gi",
        env={"TRAINSTACK_MODEL_NAME": args.model_name, "PYTHONUNBUFFERED": "1"},
        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=PORT)],
        readiness_probe=_probe("/readyz", 5, 3),
        # Generous: importing torch + gradio takes a while on a small node.
        liveness_probe=_probe("/healthz", 60, 6),
    )


def _deployment_spec(args: InferenceArgs, labels: dict[str, str]) -> k8s.apps.v1.DeploymentSpecArgs:
    return k8s.apps.v1.DeploymentSpecArgs(
        replicas=args.replicas,
        selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
            spec=k8s.core.v1.PodSpecArgs(
                security_context=pod.pod_security(), containers=[pod.container(_container(args))]
            ),
        ),
    )


def _service_spec(args: InferenceArgs, labels: dict[str, str]) -> k8s.core.v1.ServiceSpecArgs:
    return k8s.core.v1.ServiceSpecArgs(
        type=args.service_type,
        selector=labels,
        ports=[k8s.core.v1.ServicePortArgs(name="http", port=PORT, target_port="http")],
        # Gradio keeps per-session state in the serving process: pin each client.
        session_affinity="ClientIP" if args.replicas > 1 else None,
    )


class Inference(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    url: pulumi.Output[str]  # in-cluster
    access: pulumi.Output[str]  # the command that shows how to reach it from outside

    def __init__(self, name: str, args: InferenceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:Inference", name, None, opts)
        labels = pod.labels(NAME)
        metadata = k8s.meta.v1.ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels)
        self.deployment = k8s.apps.v1.Deployment(
            NAME,
            metadata=metadata,
            spec=_deployment_spec(args, labels),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.service = k8s.core.v1.Service(
            NAME,
            metadata=metadata,
            spec=_service_spec(args, labels),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployment]),
        )
        self.url = pulumi.Output.concat("http://", NAME, ".", args.namespace, f".svc:{PORT}")
        self.access = pulumi.Output.from_input(args.namespace).apply(
            lambda ns: access_hint(ns, args.service_type)
        )
        self.register_outputs({"url": self.url, "access": self.access})
