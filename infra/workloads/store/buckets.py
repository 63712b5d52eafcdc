"""The store's buckets (a Job running `python -m trainer buckets`) and, for an external
store, the credentials Secrets the stack makes from storeAccessKey/storeSecretKey (one
named by a digest of its content, one under a fixed name: infra/workloads/rotation.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.workloads import pod, rotation
from infra.workloads.catalog import BUCKETS

JOB_NAME = "trainstack-buckets"
STORE_SECRET = "trainstack-store-credentials"


@dataclass
class BucketsArgs:
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    store: pod.StoreRef
    timeout: str  # how long `pulumi up` waits for the Job to complete (e.g. "15m")
    image_pull_policy: str = "IfNotPresent"
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)  # the store
    tracking: bool = False  # also the MLflow server's artifact bucket (`<prefix>mlflow`)


class Buckets(pulumi.ComponentResource):
    """Depend on this component to wait until `<prefix>datasets|models|metrics` (and
    `<prefix>mlflow` with `tracking`) exist."""

    job: k8s.batch.v1.Job

    def __init__(self, name: str, args: BucketsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:Buckets", name, None, opts)
        spec = pod.ContainerSpec(
            name="buckets",
            image=args.image,
            image_pull_policy=args.image_pull_policy,
            command=["python", "-m", "trainer", "buckets",
                     *(["--tracking"] if args.tracking else [])],
            store=args.store.for_jobs(),
            cpu="100m",
            memory="256Mi",
            cpu_limit="500m",
            memory_limit="512Mi",
            ephemeral_storage="256Mi",
            scratch=[pod.tmp("128Mi")],
        )
        self.job = pod.job(
            JOB_NAME,
            args.namespace,
            BUCKETS,
            spec,
            pulumi.ResourceOptions(
                parent=self,
                # The Job only succeeds once the store answers (MinIO: its readiness).
                depends_on=list(args.depends_on),
                # The first workload on a node also pulls the trainer image (~1-2 GB).
                custom_timeouts=pulumi.CustomTimeouts(create=args.timeout, update=args.timeout),
            ),
        )
        self.register_outputs({"job": self.job.metadata.name})


@dataclass
class StoreCredentialsArgs:
    namespace: pulumi.Input[str]
    access_key: str
    secret_key: pulumi.Input[str]  # a secret Output
    versions: rotation.SecretVersions  # names the Secret the pods read by its content


class StoreCredentials(pulumi.ComponentResource):
    """The Secrets (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for an external store:
    `secret_name` (`<STORE_SECRET>-<version>`) for the pods that keep running, STORE_SECRET
    for the Jobs."""

    secret_name: pulumi.Output[str]
    version: pulumi.Output[str]

    def __init__(self, name: str, args: StoreCredentialsArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:StoreCredentials", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        data, labels = pod.credentials(args.access_key, args.secret_key), pod.labels("store")
        rotation.stable_secret(STORE_SECRET, args.namespace, labels, data, child)
        secret, self.version = rotation.versioned_secret(
            STORE_SECRET + rotation.VERSIONED_SUFFIX, STORE_SECRET, args.namespace, labels,
            data, args.versions, child)
        self.secret_name = secret.metadata.name
        self.register_outputs({"secret_name": self.secret_name})
