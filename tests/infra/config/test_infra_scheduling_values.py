"""Scheduling values the API server would refuse are refused by parse_config, naming the key
(the cluster tier, tests/cluster/test_validation.py, checks the same against a real server)."""

from __future__ import annotations

import json

import pytest

from infra.config.keys import parse_config
from infra.config.stack_config import MIN_WORKER_MEMORY
from tests.infra.infra_helpers import PUSHED
from trainer.contract.errors import ConfigError

REFUSED = [
    ("tolerations", [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "present"}],
     "operator Exists takes no value"),
    ("tolerations", [{"operator": "Equal", "value": "present"}], "operator Equal needs a key"),
    ("tolerations", [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 60}],
     "only with effect NoExecute"),
    ("tolerations", [{"key": "gpu type", "operator": "Exists"}], "'gpu type' is not a label key"),
    ("nodeSelector", {"gpu type": "a"}, "'gpu type' is not one"),
    ("nodeSelector", {"gpu": "A100 80GB/pcie"}, "'A100 80GB/pcie' (for 'gpu') is not one"),
    ("memoryPerWorker", "1", f"at least {MIN_WORKER_MEMORY}"),
]


@pytest.mark.parametrize(("key", "value", "why"), REFUSED)
def test_refused_naming_the_key(key, value, why):
    raw = value if isinstance(value, str) else json.dumps(value)
    with pytest.raises(ConfigError, match=f"trainstack:{key}") as error:
        parse_config({**PUSHED, key: raw})
    assert why in str(error.value)


@pytest.mark.parametrize(("key", "value"), [
    ("tolerations", [{"operator": "Exists"}]),
    ("tolerations", [{"key": "k", "operator": "Exists", "effect": "NoExecute",
                      "tolerationSeconds": 30}]),
    ("nodeSelector", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "pool": ""}),
])
def test_accepted(key, value):
    parse_config({**PUSHED, key: value if isinstance(value, str) else json.dumps(value)})
