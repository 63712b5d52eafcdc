"""MLflow's login (`mlflowAccess login`): MLflow's own basic-auth app, one generated login.

By default (`port-forward`) the server admits only the stack's pods and users come through
`kubectl port-forward`; `login` opens it to the app's users and then the server asks for a
login. The login is generated (pulumi-random) and kept in two Secrets:

- `mlflow-auth-<digest>`: what the server reads, by secretKeyRef: the admin's password
  (MLFLOW_AUTH_ADMIN_PASSWORD) and the key that signs its CSRF tokens
  (MLFLOW_FLASK_SERVER_SECRET_KEY; basic-auth refuses to start without one). Named by a
  digest of its content (infra/workloads/rotation.py): a new login rolls the server.
- `mlflow-client`: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which the training
  pods read with `envFrom` (optional: the same template with and without the login), by
  its fixed name: a new login never restarts training (they read it at their next start).

The auth database (users, permissions) lives in /tmp, the pod's emptyDir: MLflow creates
the admin from MLFLOW_AUTH_ADMIN_PASSWORD only when the user does not exist yet, so a
database kept across restarts would keep an old password after a rotation. Fresh at each
start, the Secret's password is the one that works. Users added in the UI do not survive a
restart: the stack's one login is the way in.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.workloads import pod, rotation
from infra.workloads.catalog import TRACKING

ADMIN = "trainstack"
SERVER_SECRET = "mlflow-auth"
CLIENT_SECRET = "mlflow-client"
CONFIG_MAP = "mlflow-auth-config"
CONFIG_DIR = "/etc/mlflow/auth"
CONFIG_PATH = f"{CONFIG_DIR}/basic_auth.ini"
PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
CSRF_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
CLIENT_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
# No secret in it: the admin's password comes from the env. READ: a logged-in user sees
# every experiment; only the admin (the stack's login) changes them.
CONFIG = (f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{pod.TMP}/mlflow-auth.db\n"
          f"admin_username = {ADMIN}\n"
          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")


class MlflowLogin:
    """The login's Secrets and ConfigMap; `server_env`, `volume`, `mount` for the server."""

    def __init__(self, namespace: pulumi.Input[str], versions: rotation.SecretVersions,
                 opts: pulumi.ResourceOptions):
        def generated(name: str) -> pulumi.Output[str]:
            return random.RandomPassword(name, length=32, special=False, opts=opts).result

        password, csrf_key = generated("mlflow-admin-password"), generated("mlflow-csrf-key")
        # The server reads it at start: a new value, a new name, a rolled server.
        self.server_secret, _ = rotation.versioned_secret(
            SERVER_SECRET, SERVER_SECRET, namespace, TRACKING.labels,
            _data({PASSWORD_ENV: password, CSRF_KEY_ENV: csrf_key}), versions, opts)
        rotation.stable_secret(CLIENT_SECRET, namespace, TRACKING.labels,
                               _data({USERNAME_ENV: ADMIN, CLIENT_PASSWORD_ENV: password}), opts)
        self.config_map = rotation.versioned_config_map(
            CONFIG_MAP, CONFIG_MAP, namespace, TRACKING.labels, {"basic_auth.ini": CONFIG}, opts)

    def server_env(self) -> list[k8s.core.v1.EnvVarArgs]:
        return [k8s.core.v1.EnvVarArgs(name="MLFLOW_AUTH_CONFIG_PATH", value=CONFIG_PATH),
                *(pod.secret_env(name, self.server_secret.metadata.name, name)
                  for name in (PASSWORD_ENV, CSRF_KEY_ENV))]

    def volume(self) -> k8s.core.v1.VolumeArgs:
        return k8s.core.v1.VolumeArgs(name="auth-config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
            name=self.config_map.metadata.name))

    @staticmethod
    def mount() -> k8s.core.v1.VolumeMountArgs:
        return k8s.core.v1.VolumeMountArgs(name="auth-config", mount_path=CONFIG_DIR,
                                           read_only=True)


def _data(values: dict[str, pulumi.Input[str]]) -> pulumi.Output[dict[str, str]]:
    keys = list(values)
    return pulumi.Output.secret(pulumi.Output.all(*values.values()).apply(
        lambda got: dict(zip(keys, got, strict=True))))


def client_env() -> list[k8s.core.v1.EnvFromSourceArgs]:
    """The training pods' MLflow login, when there is one (optional)."""
    return [k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(
        name=CLIENT_SECRET, optional=True))]
