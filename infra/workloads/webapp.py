"""Inference: the Gradio/FastAPI app as a Deployment + Service (+ its access token Secret).

With an access token (`inferenceAuthToken`, or the user's Secret `inferenceAuthSecret`) the
app gets TRAINSTACK_AUTH_TOKEN by secretKeyRef only; the app requires it as a bearer token
(docs/architecture.md, "Environment of every workload"). The stack's Secret is
`inference-auth-<digest>` (infra/workloads/rotation.py): a new token rolls the app, and the
old token works until the old pods are gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.workloads import pod, rotation
from infra.workloads.catalog import APP
from trainer.contract.env import TRACKING_URI_ENV
from trainer.contract.layout import AUTH_TOKEN_ENV, MLFLOW_UI_URL_ENV

NAME = APP.name
HTTP = APP.port("http")
PORT = HTTP.number
AUTH_SECRET = "inference-auth"  # the Secret the stack makes from inferenceAuthToken (+ digest)
CACHE_DIR = "/var/cache/trainstack"  # --cache-dir: downloaded versions, compiled models
CACHE_SIZE = "2Gi"
TMP_SIZE = "1Gi"  # Gradio's uploads, temp files


@dataclass
class InferenceArgs:
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    store: pod.StoreRef
    model_name: str  # <model>-<dataset>
    versions: rotation.SecretVersions  # names the token's Secret by its content
    replicas: int = 1
    service_type: str = "NodePort"
    image_pull_policy: str = "IfNotPresent"
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)  # MinIO
    auth_token: pulumi.Input[str] | None = None  # secret Output: the stack makes AUTH_SECRET
    auth_secret: str | None = None  # or: the user's Secret (key AUTH_TOKEN_ENV)
    tracking_uri: pulumi.Input[str] | None = None  # MLFLOW_TRACKING_URI (config `mlflow`)
    mlflow_ui_url: str | None = None  # where users' browsers open MLflow (the app's links)


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


def _container(args: InferenceArgs, token_secret: pulumi.Input[str] | None
               ) -> pod.ContainerSpec:
    auth = ([pod.secret_env(AUTH_TOKEN_ENV, token_secret, AUTH_TOKEN_ENV)]
            if token_secret is not None else [])
    return pod.ContainerSpec(
        name=NAME,
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        command=["python", "-m", "inference", "serve", "--host", "0.0.0.0", "--port", str(PORT),
                 "--cache-dir", CACHE_DIR],
        store=args.store,
        cpu="500m",
        memory="1Gi",
        cpu_limit="2",
        memory_limit="2Gi",
        ephemeral_storage="3Gi",  # TMP_SIZE + CACHE_SIZE
        env={"TRAINSTACK_MODEL_NAME": args.model_name, "PYTHONUNBUFFERED": "1",
             **({TRACKING_URI_ENV: args.tracking_uri} if args.tracking_uri is not None else {}),
             **({MLFLOW_UI_URL_ENV: args.mlflow_ui_url} if args.mlflow_ui_url else {})},
        secret_env=auth,
        ports=[k8s.core.v1.ContainerPortArgs(name=HTTP.name, container_port=PORT)],
        scratch=[pod.tmp(TMP_SIZE), pod.Scratch("cache", CACHE_DIR, CACHE_SIZE)],
        readiness_probe=_probe("/readyz", 5, 3),
        # Generous: importing torch + gradio takes a while on a small node.
        liveness_probe=_probe("/healthz", 60, 6),
    )


def _deployment_spec(args: InferenceArgs, account: pulumi.Input[str],
                     token_secret: pulumi.Input[str] | None) -> k8s.apps.v1.DeploymentSpecArgs:
    spec = _container(args, token_secret)
    return k8s.apps.v1.DeploymentSpecArgs(
        replicas=args.replicas,
        selector=k8s.meta.v1.LabelSelectorArgs(match_labels=APP.labels),
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=APP.labels),
            spec=pod.pod_spec(account, [pod.container(spec)], scratch=spec.scratch),
        ),
    )


def _service_spec(args: InferenceArgs) -> k8s.core.v1.ServiceSpecArgs:
    return k8s.core.v1.ServiceSpecArgs(
        type=args.service_type,
        selector=APP.labels,
        ports=[k8s.core.v1.ServicePortArgs(name=HTTP.name, port=PORT, target_port=HTTP.name)],
        # Gradio keeps per-session state in the serving process: pin each client.
        session_affinity="ClientIP" if args.replicas > 1 else None,
    )


class Inference(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    url: pulumi.Output[str]  # in-cluster
    access: pulumi.Output[str]  # the command that shows how to reach it from outside
    token_secret: pulumi.Input[str] | None  # the Secret with the access token; None: open

    def __init__(self, name: str, args: InferenceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:Inference", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        metadata = k8s.meta.v1.ObjectMetaArgs(name=NAME, namespace=args.namespace,
                                              labels=APP.labels)
        account = pod.service_account(APP, args.namespace, child)
        token_secret = self.token_secret = self._token_secret(args, child)
        self.deployment = k8s.apps.v1.Deployment(
            NAME,
            metadata=metadata,
            spec=_deployment_spec(args, account.metadata.name, token_secret),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.service = k8s.core.v1.Service(
            NAME,
            metadata=metadata,
            spec=_service_spec(args),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployment]),
        )
        self.url = pulumi.Output.concat("http://", NAME, ".", args.namespace, f".svc:{PORT}")
        self.access = pulumi.Output.from_input(args.namespace).apply(
            lambda ns: access_hint(ns, args.service_type)
        )
        self.register_outputs({"url": self.url, "access": self.access})

    @staticmethod
    def _token_secret(args: InferenceArgs, opts: pulumi.ResourceOptions
                      ) -> pulumi.Input[str] | None:
        """The name of the Secret holding the access token, or None (no token: open app)."""
        if args.auth_token is None:
            return args.auth_secret
        # The Pulumi name stays the first one's: an upgrade replaces that Secret (new
        # name created first) instead of making a second.
        secret, _ = rotation.versioned_secret(
            AUTH_SECRET, AUTH_SECRET, args.namespace, APP.labels,
            pulumi.Output.from_input(args.auth_token).apply(lambda t: {AUTH_TOKEN_ENV: t}),
            args.versions, opts)
        return secret.metadata.name
