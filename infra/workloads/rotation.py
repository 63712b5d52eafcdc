"""Rolling the pods that read a secret when its value changes (a rotation).

A pod reads its Secrets when it starts (env by secretKeyRef; MinIO and MLflow read theirs
as files once): updating a Secret changes nothing in running pods. So a Secret the stack
makes for pods that keep running (MinIO, MLflow, the app, the training job) is named by a
digest of its content, `<name>-<digest>` (`versioned_secret`): a new value is a new
Secret, the pod templates that name it change and their pods roll (a Deployment's
rolling update; the training job is replaced and resumes from its checkpoint); the same
value gives the same name, so nothing rolls.

Why a new name and not a new value under the old one: pulumi-kubernetes replaces a Secret
whose data changes, and it must delete an object that keeps its name before it creates
the new one; the engine then deletes first every object that takes a property from it
(a Deployment that names it in its template) and creates it again: the app's Deployment
gone, its pods with it. A new name is created first; what reads it is updated (rolled;
pulumi-kubernetes waits for a Deployment's rollout) and the old Secret is deleted at the
end of `pulumi up`.

A Secret under a fixed name (`stable_secret`) is for what must not roll or be replaced:
the bucket and ingest Jobs (done once; a pod they start later reads it as it is then),
the training pods' optional MLflow login, and people (`kubectl get secret ...`). Nothing
takes its name from the resource (only the name, as text, and `depends_on` for the
order), so when it is replaced nothing is deleted with it.

A ConfigMap a Deployment reads (`versioned_config_map`) is named by a digest of its data
for the same reason: a release that changes it rolls the Deployment instead of deleting it.

The digest of a Secret is an HMAC-SHA256 under a key the stack generates once (a
RandomPassword, encrypted in the state): without that key a digest cannot be checked
against guesses, so it reveals nothing about even a short password, and it can stay in
plain sight (a name, so diffs stay readable). Secrets the user manages (`storeCredentialsSecret`,
`inferenceAuthSecret`, `datasetSourceSecret`) are not read by the stack: their rotation
is the user's restart (docs/security.md, "Rotating secrets").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

DIGEST_CHARS = 16  # 64 bits: enough to tell versions apart
# The Pulumi name of a versioned Secret whose fixed-name twin keeps the original one.
VERSIONED_SUFFIX = "-versioned"


def digest(key: str, content: Any) -> str:
    """The version of `content`: HMAC-SHA256 under `key`, DIGEST_CHARS hex digits."""
    message = json.dumps(content, sort_keys=True).encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()[:DIGEST_CHARS]


class _VersionKey(pulumi.ComponentResource):
    def __init__(self, name: str):
        super().__init__("trainstack:index:SecretVersionKey", name)
        self.result = random.RandomPassword(f"{name}-key", length=64, special=False,
                                            opts=pulumi.ResourceOptions(parent=self)).result
        self.register_outputs({})


class SecretVersions:
    """Digests of secret contents under one generated key (made on first use: a stack
    without a secret of its own, such as render mode, has no key either)."""

    def __init__(self) -> None:
        self._key: pulumi.Output[str] | None = None

    def of(self, content: pulumi.Input[Any]) -> pulumi.Output[str]:
        if self._key is None:
            self._key = _VersionKey("secret-version").result
        version = pulumi.Output.all(self._key, content).apply(lambda got: digest(*got))
        # Safe in plain text: an HMAC under a secret key (see the module docstring).
        return pulumi.Output.unsecret(version)


def versioned_name(name: str, version: str) -> str:
    return f"{name}-{version}"


def versioned_secret(resource_name: str, name: str, namespace: pulumi.Input[str],
                     labels: dict[str, str], data: pulumi.Input[dict[str, str]],
                     versions: SecretVersions, opts: pulumi.ResourceOptions
                     ) -> tuple[k8s.core.v1.Secret, pulumi.Output[str]]:
    """The Secret `<name>-<digest of data>` for pods that roll when it changes, and its
    digest. Its whole stringData is a secret Output (encrypted in the state, never shown)."""
    version = versions.of(data)
    secret = k8s.core.v1.Secret(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=version.apply(lambda v: versioned_name(name, v)), namespace=namespace,
            labels=labels),
        type="Opaque",
        string_data=pulumi.Output.secret(data),
        opts=opts,
    )
    return secret, version


def versioned_config_map(resource_name: str, name: str, namespace: pulumi.Input[str],
                         labels: dict[str, str], data: dict[str, str],
                         opts: pulumi.ResourceOptions) -> k8s.core.v1.ConfigMap:
    """The ConfigMap `<name>-<SHA-256 of data>` (no secret in it: a plain digest)."""
    text = json.dumps(data, sort_keys=True).encode()
    return k8s.core.v1.ConfigMap(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=versioned_name(name, hashlib.sha256(text).hexdigest()[:DIGEST_CHARS]),
            namespace=namespace, labels=labels),
        data=data,
        opts=opts,
    )


def stable_secret(name: str, namespace: pulumi.Input[str], labels: dict[str, str],
                  data: pulumi.Input[dict[str, str]], opts: pulumi.ResourceOptions
                  ) -> k8s.core.v1.Secret:
    """The Secret `name` for readers that must not roll: refer to it by `name` (text) and
    `depends_on`, never by its Output, or its replacement would delete them first."""
    return k8s.core.v1.Secret(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace, labels=labels),
        type="Opaque",
        string_data=pulumi.Output.secret(data),
        opts=opts,
    )
