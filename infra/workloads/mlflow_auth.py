"""MLflow's login (`mlflowAccess login`): MLflow's own basic-auth app, one generated login.

By default (`port-forward`) the server admits only the stack's pods and users come through
`kubectl port-forward`; `login` opens it to the app's users and then the server asks for a
login. The login is generated (pulumi-random) and kept in two Secrets:

- `mlflow-auth`: what the server reads, by secretKeyRef: the admin's password
  (MLFLOW_AUTH_ADMIN_PASSWORD) and the key that signs its CSRF tokens
  (MLFLOW_FLASK_SERVER_SECRET_KEY; basic-auth refuses to start without one).
- `mlflow-client`: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which the training
  pods read with `envFrom` (optional: the same template with and without the login).

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

from infra.workloads import pod
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

    def __init__(self, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions):
        def generated(name: str) -> pulumi.Output[str]:
            return random.RandomPassword(name, length=32, special=False, opts=opts).result

        password, csrf_key = generated("mlflow-admin-password"), generated("mlflow-csrf-key")
        self.server_secret = self._secret(SERVER_SECRET, namespace, opts,
                                          {PASSWORD_ENV: password, CSRF_KEY_ENV: csrf_key})
        self.client_secret = self._secret(CLIENT_SECRET, namespace, opts,
                                          {USERNAME_ENV: ADMIN, CLIENT_PASSWORD_ENV: password})
        self.config_map = k8s.core.v1.ConfigMap(
            CONFIG_MAP, metadata=k8s.meta.v1.ObjectMetaArgs(
                name=CONFIG_MAP, namespace=namespace, labels=TRACKING.labels),
            data={"basic_auth.ini": CONFIG}, opts=opts)
        # What the server reads at start: a new value must restart it (infra/security/rotation.py).
        self.secret_values = pulumi.Output.all(password, csrf_key)

    @staticmethod
    def _secret(name: str, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions,
                values: dict[str, pulumi.Input[str]]) -> k8s.core.v1.Secret:
        keys = list(values)
        return k8s.core.v1.Secret(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace,
                                                labels=TRACKING.labels),
            type="Opaque",
            string_data=pulumi.Output.secret(pulumi.Output.all(*values.values()).apply(
                lambda got: dict(zip(keys, got, strict=True)))),
            opts=opts)

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


def client_env() -> list[k8s.core.v1.EnvFromSourceArgs]:
    """The training pods' MLflow login, when there is one (optional)."""
    return [k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(
        name=CLIENT_SECRET, optional=True))]
