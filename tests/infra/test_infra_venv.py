"""Every documented order works: `make demo` then `pulumi up`, `make test` then `pulumi up`,
`pulumi up` on a fresh clone. All three end in the one `.venv` Pulumi.yaml names.

Pulumi's Python host (toolchain pip) creates that venv only when it holds no Python yet,
and then installs `requirements.txt` from the *program directory* (pulumi/pulumi
sdk/python/toolchain/pip.go InstallDependencies, called with the program directory; with
`main: infra/` that would be infra/, where there is none). So: no `main` (the program
directory is the root, its __main__.py runs infra/__main__.py), requirements.txt there,
and every Make target that creates `.venv` installs requirements.txt into it.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_PACKAGES = ("pulumi", "pulumi-kubernetes", "pulumi-docker", "pulumi-random", "kubernetes")


def pinned_requirements() -> dict[str, str]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    pins = [re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()) for line in lines]
    return {m.group(1).lower(): m.group(2) for m in pins if m}


def test_pulumi_installs_the_stack_requirements_from_the_program_directory():
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    program_dir = REPO_ROOT / project.get("main", ".")
    assert program_dir.resolve() == REPO_ROOT  # where the host looks for requirements.txt
    assert (program_dir / "__main__.py").is_file()
    lines = [line.strip() for line in (program_dir / "requirements.txt").read_text().splitlines()]
    assert "-e ." in lines  # the project itself: `import infra, trainer` in the program
    assert set(STACK_PACKAGES) <= set(pinned_requirements())


@pytest.mark.parametrize("target", ["demo", "test", "test-fast", "lint", "bench"])
def test_every_make_target_that_creates_the_venv_installs_the_stack_requirements(target):
    """`make -n -B` prints the recipes it would run: the venv Pulumi.yaml names is created
    and gets requirements.txt's pins (from the lock) before anything runs in it."""
    venv = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["runtime"]["options"][
        "virtualenv"]
    result = subprocess.run(["make", "-n", "-B", target], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    recipe = result.stdout.replace("\\\n", " ")
    lines = [line for line in recipe.splitlines() if line.strip()]
    creates = next(i for i, line in enumerate(lines) if f"-m venv {venv}" in line)
    # requirements.lock holds every pin of requirements.txt (tests/test_locks.py), then
    # requirements.txt's `-e .`: the project itself.
    installs = next(i for i, line in enumerate(lines)
                    if re.search(rf"{re.escape(venv)}/bin/pip install .*-r requirements\.lock(\s|$)",
                                 line))
    assert any(re.search(rf"{re.escape(venv)}/bin/pip install .*-e \.$", line)
               for line in lines[installs:])
    first_use = next(i for i, line in enumerate(lines)
                     if f"{venv}/bin/" in line and "pip install" not in line
                     and "-m venv" not in line)
    assert creates < installs < first_use, recipe


def test_this_venv_has_every_stack_requirement_at_its_pin():
    """`make test` runs in the venv its own target made: it can run the Pulumi program."""
    for name, version in pinned_requirements().items():
        if name in STACK_PACKAGES:
            assert importlib.metadata.version(name) == version, name
    for module in ("pulumi", "pulumi_kubernetes", "pulumi_docker", "pulumi_random",
                   "infra.stack"):
        __import__(module)
