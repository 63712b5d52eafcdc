"""Rolling the pods that read a secret when its value changes (a rotation).

A pod reads its Secrets when it starts (env by secretKeyRef; MinIO and MLflow read theirs
as files once): updating a Secret changes nothing in running pods. So every pod template
that reads a Secret the stack makes carries `trainstack.dev/<secret>-version`: a digest of
the Secret's content. A new value gives a new digest, the template changes and the pods
roll (a Deployment's rolling update; the PyTorchJob is replaced and resumes from its
checkpoint); the same value gives the same digest, so nothing rolls.

The digest is an HMAC-SHA256 under a key the stack generates once (a RandomPassword,
encrypted in the state): without that key a digest cannot be checked against guesses, so
it reveals nothing about even a short password, and it can stay in plain sight (the
template is not made a secret, so diffs stay readable). Secrets the user manages
(`storeCredentialsSecret`, `inferenceAuthSecret`, `datasetSourceSecret`) are not read by the
stack: their rotation is the user's restart (docs/operations.md, "Rotating secrets").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pulumi
import pulumi_random as random

PREFIX = "trainstack.dev/"
STORE_CREDENTIALS = f"{PREFIX}store-credentials-version"
AUTH_TOKEN = f"{PREFIX}auth-token-version"
MLFLOW_LOGIN = f"{PREFIX}mlflow-login-version"
DIGEST_CHARS = 16  # 64 bits: enough to tell versions apart


def _digest(key: str, content: Any) -> str:
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
        digest = pulumi.Output.all(self._key, content).apply(lambda got: _digest(*got))
        # Safe in plain text: an HMAC under a secret key (see the module docstring).
        return pulumi.Output.unsecret(digest)


def annotations(versions: dict[str, pulumi.Input[str] | None]) -> dict[str, Any] | None:
    """A pod template's annotations for the secret versions it reads (None: none)."""
    given = {name: version for name, version in versions.items() if version is not None}
    return given or None
