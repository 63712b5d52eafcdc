"""The hashed locks: every pin of every requirements file is in its lock, the image's lock is
the image's part of .venv's, and torch from PyTorch's CPU index leaves the CUDA libraries out.
`make lock` rewrites them (docs/dependencies.md, "Locked dependencies")."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.image.check_installed import compare, locked_for_image
from tools.lock.torch_split import entries, split

REPO_ROOT = Path(__file__).resolve().parents[1]
# Each lock and the requirements files it is compiled from (`make lock`).
LOCKS = {
    "requirements.lock": ["requirements-dev.txt"],
    "requirements-image.lock": ["trainer/requirements.txt", "inference/requirements.txt"],
    "requirements-mlflow-server.lock": ["requirements-mlflow-server.txt"],
    "requirements-checkov.lock": ["requirements-checkov.txt"],
}


def pins(requirements_file: Path) -> dict[str, str]:
    """{name: version} of every `name==version` line, following `-r` includes."""
    found: dict[str, str] = {}
    for raw in requirements_file.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if line.startswith("-r "):
            found.update(pins(requirements_file.parent / line[3:].strip()))
        elif line and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{requirements_file}: {line!r} is not pinned"
            found[canonicalize_name(requirement.name)] = spec.version
    return found


def unlocked_pins(requirement_files: list[Path], lock_text: str) -> list[str]:
    """The pins a lock lacks or locks at another version."""
    locked: dict[str, set[str]] = {}
    for name, version, _ in entries(lock_text):
        locked.setdefault(name, set()).add(version)
    return [f"{path.name} pins {name}=={version}, the lock has {sorted(locked.get(name, []))}"
            for path in requirement_files for name, version in pins(path).items()
            if version not in locked.get(name, set())]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_is_in_its_lock_with_hashes(lock):
    text = (REPO_ROOT / lock).read_text()
    assert unlocked_pins([REPO_ROOT / f for f in LOCKS[lock]], text) == [], "run `make lock`"
    for name, _, lines in entries(text):
        assert any("--hash=sha256:" in line for line in lines), f"{lock}: {name} has no hash"
    assert "--generate-hashes" in text.splitlines()[1]  # uv's header: the command it ran


def test_a_requirement_added_without_relocking_is_caught(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("-r extra.txt\nnumpy==2.4.6\n")
    (tmp_path / "extra.txt").write_text("pillow==12.1.0  # with a comment\n")
    lock = "numpy==2.4.6 \\\n    --hash=sha256:00\npillow==12.1.0 \\\n    --hash=sha256:11\n"
    assert unlocked_pins([requirements], lock) == []
    (tmp_path / "extra.txt").write_text("pillow==12.2.0\nrich==15.0.0\n")
    assert unlocked_pins([requirements], lock) == [
        "requirements.txt pins pillow==12.2.0, the lock has ['12.1.0']",
        "requirements.txt pins rich==15.0.0, the lock has []"]


def test_the_image_lock_is_the_image_part_of_the_venv_lock():
    """Same versions, markers and hashes (a forked resolution has one entry per marker)."""
    venv_lock = (REPO_ROOT / "requirements.lock").read_text()
    venv = {lines[0]: hashes(lines) for _, _, lines in entries(venv_lock)}
    image = entries((REPO_ROOT / "requirements-image.lock").read_text())
    assert len(image) > 100
    for _, _, lines in image:
        assert venv.get(lines[0]) == hashes(lines), lines[0]


def hashes(lines: list[str]) -> list[str]:
    return [line.strip(" \\") for line in lines if "--hash=" in line]


def test_torch_from_the_cpu_index_leaves_the_cuda_libraries_out():
    lock = (REPO_ROOT / "requirements-image.lock").read_text()
    torch_txt, rest = split(lock, "cpu")
    versions = {name: version for name, version, _ in entries(lock)}
    assert torch_txt.split() == [f"torch=={versions['torch']}+cpu",
                                 f"torchvision=={versions['torchvision']}+cpu"]
    kept = {name for name, _, _ in entries(rest)}
    assert {"nvidia-cublas", "triton", "cuda-toolkit"} <= set(versions) - kept
    assert {"sympy", "networkx", "jinja2", "fsspec", "filelock", "numpy", "pillow"} <= kept
    assert not any(re.match(r"nvidia-|cuda-|triton$|torch$|torchvision$", n) for n in kept)
    _, rest_cuda = split(lock, "cu130")  # a CUDA wheel from PyTorch's index keeps them
    assert "nvidia-cublas" in {name for name, _, _ in entries(rest_cuda)}
    assert "--hash=sha256:" in rest  # the rest stays hashed


def test_torch_split_names_a_bad_variant():
    with pytest.raises(ValueError, match=r"torch variant 'gpu': expected cpu or cuNNN"):
        split("torch==2.14.1 \\\n", "gpu")


def test_image_check_catches_drift_and_cuda_next_to_the_cpu_wheel():
    wanted = locked_for_image((REPO_ROOT / "requirements-image.lock").read_text())
    assert "pywin32" not in wanted and wanted["torch"]  # markers evaluated for the image
    assert compare(wanted, dict(wanted)) == []
    drifted = {**wanted, "pillow": "13.0.0"}
    del drifted["scipy"]
    assert compare(wanted, drifted) == [
        f"pillow 13.0.0 installed, the lock says {wanted['pillow']}",
        f"scipy=={wanted['scipy']} from the lock is not installed"]
    cpu = {n: v for n, v in wanted.items() if not n.startswith(("nvidia-", "cuda-", "triton"))}
    cpu["torch"] += "+cpu"
    assert compare(wanted, cpu) == []
    assert compare(wanted, {**cpu, "nvidia-nccl-cu13": "2.30.7"}) == [
        "nvidia-nccl-cu13 2.30.7: a CUDA library next to the CPU torch"]


def make_dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    venv = tmp_path / "venv"
    return subprocess.run(["make", "-n", "--no-print-directory", f"VENV={venv}", *args,
                           f"{venv}/.runtime-installed"], cwd=REPO_ROOT, check=False,
                          capture_output=True, text=True, timeout=60)


def test_make_installs_the_venv_from_the_lock(tmp_path):
    out = make_dry_run(tmp_path).stdout
    assert "pip install --quiet --no-deps --require-hashes -r requirements.lock" in out
    assert "download.pytorch.org" not in out
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in out


def test_make_torch_cpu_takes_the_cpu_wheel_and_the_rest_of_the_lock(tmp_path):
    out = make_dry_run(tmp_path, "TORCH=cpu").stdout
    assert "tools/lock/torch_split.py requirements.lock cpu" in out
    assert "--index-url https://download.pytorch.org/whl/cpu -r" in out
    assert "--require-hashes -r " + f"{tmp_path}/venv/torch-cpu/rest.lock" in out


def test_make_refuses_to_switch_torch_in_place(tmp_path):
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".runtime-installed").write_text("pypi\n")
    result = subprocess.run(["make", "--no-print-directory", f"VENV={tmp_path}/venv",
                             "TORCH=cpu", "torch-choice"], cwd=REPO_ROOT, check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{tmp_path}/venv was made with TORCH=pypi; for TORCH=cpu remove it" in result.stderr
    bad = subprocess.run(["make", "--no-print-directory", "TORCH=gpu", "torch-choice"],
                         cwd=REPO_ROOT, check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "TORCH=gpu: expected pypi" in bad.stderr
