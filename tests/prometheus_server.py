"""A real Prometheus (Debian's package, 2.42; `make test` installs it) on 127.0.0.1, for the
monitoring tests: it scrapes what a test serves and evaluates the stack's rule file."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.testkit import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
INTERVAL = "1s"


def need_prometheus() -> None:
    if not (PROMETHEUS.exists() and PROMTOOL.exists()):
        pytest.fail("Debian's prometheus package is missing (/usr/bin/prometheus, promtool): "
                    "`make test` installs it (`make prometheus`)")


class Prometheus:
    def __init__(self, base: str):
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def wait_for_series(self, expr: str, deadline_s: float = 60) -> list[dict[str, Any]]:
        """The query's series once it has any (a wait, not a timed assertion)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            found = self.query(expr)
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"no series for {expr} within {deadline_s} s")

    def evaluations_since(self, count: int) -> None:
        """Let the rule group run ``count`` more times (1 s each)."""
        time.sleep(count * 1.0)


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str, labels: dict[str, str],
               rules: dict | None = None) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (host:port, /metrics) every second with ``labels``."""
    need_prometheus()
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {"global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
              "scrape_configs": [{"job_name": "trainstack", "metrics_path": "/metrics",
                                  "static_configs": [{"targets": [target], "labels": labels}]}]}
    if rules is not None:
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(tmp_path / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited: {process.stderr.read().decode()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/-/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield Prometheus(base)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)


def check_rules(path: Path) -> subprocess.CompletedProcess:
    need_prometheus()
    return subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
