"""The dataset ingest Job (a child of the Training component): downloads the dataset
(`datasetSource`, or the URL in `datasetSourceSecret`'s Secret) into the store before the
training job starts. `pulumi up` waits for it (`ingestTimeout`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pulumi
import pulumi_kubernetes as k8s

from infra.workloads import pod
from infra.workloads.catalog import INGEST
from trainer.contract.env import DATASET_SOURCE_ENV


class IngestArgs(Protocol):
    """What the ingest Job is made of: the Training component's TrainingArgs has these
    fields (a Protocol, so this part does not import the component that uses it)."""

    dataset: str
    ingest_source: str | None
    ingest_source_secret: str | None
    ingest_storage: str
    ingest_timeout: str
    image: pulumi.Input[str]
    image_pull_policy: str
    store: pod.StoreRef
    namespace: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource]


def declare(args: IngestArgs, parent: pulumi.Resource) -> k8s.batch.v1.Job:
    command = ["python", "-m", "trainer", "ingest", "--dataset", args.dataset]
    secret_env = []
    if args.ingest_source_secret:
        # The URL from the Secret stays in the environment and the ingest reads it there:
        # as `--source $(VAR)` the kubelet would expand it into the process's command
        # line (ps, /proc/<pid>/cmdline, the runtime's inspect). An image older than
        # --source-env refuses the flag rather than download the default dataset.
        command += ["--source-env", DATASET_SOURCE_ENV]
        secret_env = [pod.secret_env(DATASET_SOURCE_ENV, args.ingest_source_secret,
                                     DATASET_SOURCE_ENV)]
    elif args.ingest_source:
        command += ["--source", args.ingest_source]
    # The download and, for imagefolder archives, the unpacked files go to /tmp: an
    # emptyDir capped at ingest_storage, and the container may use no more (a bomb
    # that gets past the trainer's own limits is evicted, not the node's disk filled).
    spec = pod.ContainerSpec(
        name="ingest",
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        command=command,
        # The fixed-name Secret: a new password does not download the dataset again.
        store=args.store.for_jobs(),
        cpu="500m",
        memory="1Gi",
        cpu_limit="1",
        memory_limit="2Gi",
        ephemeral_storage=args.ingest_storage,
        env={"PYTHONUNBUFFERED": "1", "TMPDIR": pod.TMP},
        secret_env=secret_env,
        scratch=[pod.tmp(args.ingest_storage)],
    )
    timeout = pulumi.CustomTimeouts(create=args.ingest_timeout, update=args.ingest_timeout)
    return pod.job(
        f"trainstack-ingest-{args.dataset}",
        args.namespace,
        INGEST,
        spec,
        pulumi.ResourceOptions(parent=parent, depends_on=list(args.depends_on),
                               custom_timeouts=timeout),
    )
