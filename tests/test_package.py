"""The project as an installed package: the contract layer is light, every part imports from
anywhere, and the Pulumi program runs the way the Pulumi CLI runs it."""

from __future__ import annotations

import ast
import json
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# trainer.tracking.tracker too: the stack reads its env contract (MLFLOW_TRACKING_URI) from there;
# trainer.contract.env: the data cache's (TRAINSTACK_DATA_CACHE_*).
CONTRACT_MODULES = ("trainer.contract.errors", "trainer.contract.layout", "trainer.contract.schema", "trainer.limits.cpus",
                    "trainer.contract.config", "trainer.tracking.tracker", "trainer.contract.reporting.mlflow_layout",
                    "trainer.contract.env", "trainer.contract.urls")
HEAVY = ("torch", "numpy", "PIL", "gradio", "pulumi", "minio", "matplotlib", "mlflow")


def run_python(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_contract_layer_imports_nothing_heavy(tmp_path):
    result = run_python(f"""
        import json, sys
        for name in {CONTRACT_MODULES!r}:
            __import__(name)
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_a_heavy_import_would_be_caught(tmp_path):
    """The check above can fail: trainer.publish.publication (torch) is seen."""
    result = run_python(f"""
        import json, sys
        import trainer.publish.publication
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
        """, tmp_path)
    assert "torch" in json.loads(result.stdout)


def test_every_part_imports_from_any_directory(tmp_path):
    result = run_python("import trainer, inference, infra; print(trainer.__file__)", tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent == REPO_ROOT / "trainer"


def test_no_module_in_infra_shadows_a_package(tmp_path):
    """Pulumi puts infra/ first on sys.path: a module there named like a package would
    replace that package for the whole program (infra/minio.py once did)."""
    names = sorted(p.stem for p in (REPO_ROOT / "infra").glob("*.py")
                   if p.stem not in ("__init__", "__main__"))
    result = run_python(f"""
        import importlib.util, json
        print(json.dumps({{n: bool(importlib.util.find_spec(n)) for n in {names!r}}}))
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert [n for n, found in json.loads(result.stdout).items() if found] == []


def test_no_part_rewrites_sys_path():
    offenders = [str(p.relative_to(REPO_ROOT))
                 for part in ("trainer", "inference", "infra", "bench", "tests")
                 for p in (REPO_ROOT / part).rglob("*.py")
                 if "sys.path" in p.read_text() and p != Path(__file__)]
    assert offenders == []


# What `pulumi up` does: run the program directory (Pulumi.yaml sets no `main`: the project
# root, whose __main__.py runs infra/__main__.py) with runpy, which puts that directory
# first on sys.path, in the project's venv, from that directory; here under Pulumi's mocks.
PULUMI_RUN = string.Template("""
    import runpy
    import pulumi
    from pulumi.runtime.config import set_all_config

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            state = dict(args.inputs)
            if args.typ == "docker:index/image:Image":
                state["repoDigest"] = state["imageName"].rsplit(":", 1)[0] + "@sha256:" + "0" * 64
            if args.typ == "random:index/randomPassword:RandomPassword":
                state["result"] = "mock-password-0123456789"
            return args.name + "-id", state

        def call(self, args):
            return {}

    registered = []

    class Recording(Mocks):
        def new_resource(self, args):
            registered.append(args.typ)
            return super().new_resource(args)

    pulumi.runtime.set_mocks(Recording(), project="trainstack", stack="dev", preview=False)
    set_all_config($config)

    @pulumi.runtime.test
    def program():
        runpy.run_path(".", run_name="__main__")

    program()
    print(json.dumps(registered))
""")


def run_program(config: dict[str, str]) -> subprocess.CompletedProcess:
    """The program as `pulumi up` runs it, under mocks, with this engine config (full keys:
    `trainstack:workers`, `kubernetes:kubeconfig`); prints the registered types."""
    code = textwrap.dedent(PULUMI_RUN.substitute(config=repr(config)))
    return run_python("import json\n" + code, REPO_ROOT, timeout=300)


def test_pulumi_program_runs_as_the_cli_runs_it(tmp_path):
    # A kubeconfig that is not there: the storage check (infra/preflight/storage.py) asks no
    # cluster, whatever ~/.kube/config this machine has.
    result = run_program({"trainstack:image": "registry.example.com/t/trainstack-trainer",
                          "kubernetes:kubeconfig": str(tmp_path / "no-kubeconfig")})
    assert result.returncode == 0, result.stderr[-3000:]
    registered = json.loads(result.stdout.strip().splitlines()[-1])
    assert "kubernetes:apps/v1:Deployment" in registered
    assert "kubernetes:kubeflow.org/v1:PyTorchJob" in registered


ROOM_ORDER = {
    "trainer": ["contract", "store", "limits", "data", "models", "state", "publish", "tracking",
                "retrain", "run"],
    "inference": ["published", "serving", "monitoring", "edge", "ui"],
    "infra": ["config", "workloads", "security", "operators", "monitoring", "preflight"],
}


@pytest.mark.parametrize("package", sorted(ROOM_ORDER))
def test_rooms_import_only_rooms_below_them(package):
    """The layering docs/architecture.md ("Where things are") describes: a room imports only
    the rooms listed before it (its package's top-level modules may import any room)."""
    order = ROOM_ORDER[package]
    rooms = {p.name for p in (REPO_ROOT / package).iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(order), f"{package}: rooms {sorted(rooms)} vs the order {order}"
    upward = []
    for path in (REPO_ROOT / package).rglob("*.py"):
        room = path.relative_to(REPO_ROOT / package).parts[0]
        if room not in order:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == package and len(parts) > 1 and parts[1] in order and (
                        order.index(parts[1]) > order.index(room)):
                    upward.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert upward == []
