"""`mlflowAccess login` with a real MLflow server (the release of the image, .venv-mlflow):
started with the rendered command, env and auth config, it refuses anonymous requests
and a wrong password, and the trainer's client logs in with the rendered client Secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from infra.workloads.pod import TMP
from infra.workloads.tracking.mlflow_auth import CONFIG_PATH
from tests.infra.infra_helpers import PUSHED, env_of
from tests.infra.render import render
from tests.mlflow_server import MlflowServer, server_executable
from tests.testkit import free_port


def _server(tmp_path: Path) -> tuple[MlflowServer, dict[str, str]]:
    rendering = render({**PUSHED, "mlflowAccess": "login"})
    spec = rendering.objects["Deployment/mlflow"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    # The pod's /tmp (an emptyDir, fresh per pod) is this test's own directory.
    (mount,) = [m for m in container["volumeMounts"]
                if CONFIG_PATH.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    ini = rendering.objects[f"ConfigMap/{volume['configMap']['name']}"]["data"][
        "basic_auth.ini"]
    auth_config = tmp_path / "basic_auth.ini"
    auth_config.write_text(ini.replace(f"sqlite:///{TMP}/", f"sqlite:///{tmp_path}/"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    for name, value in env_of(container).items():
        if isinstance(value, dict):  # by secretKeyRef from mlflow-auth-<version>
            ref = value["secretKeyRef"]
            env[name] = rendering.objects[f"Secret/{ref['name']}"]["stringData"][ref["key"]]
        elif name == "MLFLOW_AUTH_CONFIG_PATH":
            assert value == CONFIG_PATH
            env[name] = str(auth_config)
    command = list(container["command"])
    port = free_port()
    replaced = {"--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "--artifacts-destination": str(tmp_path / "artifacts"),
                "--host": "127.0.0.1", "--port": str(port)}
    for flag, value in replaced.items():
        command[command.index(flag) + 1] = value
    command[0] = str(server_executable())
    server = MlflowServer(uri=f"http://127.0.0.1:{port}", command=command, env=env,
                          root=tmp_path)
    return server, rendering.objects["Secret/mlflow-client"]["stringData"]


def test_the_rendered_login_is_asked_and_works(tmp_path, monkeypatch):
    server, client = _server(tmp_path)
    server.start()
    try:
        search = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=5"
        assert requests.get(search, timeout=30).status_code == 401
        wrong = (client["MLFLOW_TRACKING_USERNAME"], "not-the-password")
        assert requests.get(search, auth=wrong, timeout=30).status_code == 401
        # What the training pods get by envFrom: mlflow's client reads these variables.
        for name, value in client.items():
            monkeypatch.setenv(name, value)
        from mlflow import MlflowClient

        tracking = MlflowClient(tracking_uri=server.uri)
        experiment = tracking.create_experiment("login-test")
        run = tracking.create_run(experiment)
        tracking.log_metric(run.info.run_id, "loss", 0.5)
        assert tracking.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    except Exception as e:  # noqa: BLE001 (the server's log says why)
        pytest.fail(f"{e!r}\nserver log:\n{server.log_tail()}")
    finally:
        server.stop()
