"""The render-mode drift check (infra/drift.py) against a git checkout and a stand-in
`pulumi` that writes the files a render would (the real CLI is not installed here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import drift

FAKE_PULUMI = """#!{python}
import os, pathlib, sys
args = sys.argv[1:]
if args[:3] == ["config", "get", "renderYamlTo"]:
    print("deploy/trainstack")
elif args[:1] == ["up"]:
    if os.environ.get("FAKE_PULUMI_FAIL"):
        sys.exit("error: invalid config trainstack:workers = '0': allowed: an integer >= 1")
    out = pathlib.Path("deploy/trainstack/1-manifest")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (line.split("=", 1) for line in
                       os.environ["FAKE_RENDER"].split(";") if line):
        (out / name).write_text(text)
    for stale in os.environ.get("FAKE_DELETE", "").split(";"):
        if stale:
            (out / stale).unlink()
else:
    sys.exit(f"unexpected: {{args}}")
"""
COMMITTED = "apps_v1-deployment-trainstack-inference.yaml=replicas: 1\n;v1-namespace-trainstack.yaml=kind: Namespace\n"


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pulumi"
    fake.write_text(FAKE_PULUMI.format(python=sys.executable))
    fake.chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_RENDER", COMMITTED)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["pulumi", "up"], check=True)
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "rendered"], check=True)
    return repo


def test_no_drift_when_the_render_matches(checkout):
    assert drift.main(["--stack", "gitops"]) == 0


@pytest.mark.parametrize("env, shown", [
    ({"FAKE_RENDER": COMMITTED.replace("replicas: 1", "replicas: 2")},
     "apps_v1-deployment-trainstack-inference.yaml"),
    ({"FAKE_RENDER": COMMITTED + ";v1-service-trainstack-mlflow.yaml=kind: Service\n"},
     "v1-service-trainstack-mlflow.yaml"),
    ({"FAKE_DELETE": "v1-namespace-trainstack.yaml"}, "v1-namespace-trainstack.yaml"),
], ids=["changed", "new", "deleted"])
def test_drift_is_found_and_named(checkout, monkeypatch, caplog, env, shown):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert drift.main(["--stack", "gitops"]) == 1
    assert shown in caplog.text


def test_a_failed_render_is_not_a_pass(checkout, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_PULUMI_FAIL", "1")
    assert drift.main(["--stack", "gitops"]) == 2
    assert "trainstack:workers" in caplog.text


def test_uncommitted_files_are_refused_before_rendering(checkout, caplog):
    Path("deploy/trainstack/1-manifest/extra.yaml").write_text("kind: x\n")
    assert drift.main(["--stack", "gitops"]) == 2
    assert "uncommitted" in caplog.text


def test_the_preview_count_it_names_is_what_the_render_stack_registers():
    """Issue 28 #24: the text said `~ 27 to update`; the engine shows one update per object
    of the render provider, 28 for the gitops example. A count that depends on the config
    is not written as a number; one that is must match."""
    import re

    from tests.infra.infra_helpers import RENDERED
    from tests.infra.render import render

    rendering = render(RENDERED)
    (provider,) = [r.urn for r in rendering.resources.values()
                   if r.type == "pulumi:providers:kubernetes"]
    rendered = [r for r in rendering.resources.values() if r.provider_urn == provider]
    text = " ".join(drift.__doc__.split())
    assert [int(n) for n in re.findall(r"~ (\d+) to update", text)] in ([], [len(rendered)])
    assert "every rendered object as an update" in text
