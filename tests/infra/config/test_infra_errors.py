"""Config errors as the real engine shows them: the Python language host prints a
`pulumi.RunError` as one `error:` line (no traceback; pulumi/pulumi
sdk/python/cmd/pulumi-language-python-exec, and pulumi.automation._server in .venv: `except
RunError: log.error(str(e))`), so every config error is one, on one line, naming the key
and showing values as the user typed them, never Python's reprs."""

from __future__ import annotations

import re

import pulumi
import pytest

from infra.config.keys import ConfigError
from tests.infra.config.test_infra_config import COMBINATIONS, INVALID
from tests.infra.infra_helpers import PREBUILT, PUSHED, RENDERED
from tests.infra.render import render

PYTHON_REPRS = re.compile(r"\b(True|False|None)\b|\\x|\\u|^\[|\{'")


def _error(config: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        render(config)
    return raised.value


def _cases():
    yield from ({**PUSHED, key: value} if key != "image" else {key: value}
                for key, value, _ in INVALID)
    yield from (config for config, _, _ in COMBINATIONS)


@pytest.mark.parametrize("config", list(_cases()))
def test_every_config_error_is_one_run_error_line_without_python_reprs(config):
    error = _error(config)
    assert isinstance(error, pulumi.RunError), type(error).__mro__
    message = str(error)
    assert "\n" not in message and message.startswith(f"invalid config trainstack:{error.key} ")
    assert not PYTHON_REPRS.search(message.split(": allowed:")[0]), message


def test_a_default_the_user_never_set_is_shown_as_a_default():
    message = str(_error({**RENDERED, "installTrainingOperator": ""}))
    assert "trainstack:installTrainingOperator (not set; default true): allowed:" in message
    message = str(_error({"workers": "2"}))  # image unset: the default repository
    assert "trainstack:image (not set; default trainstack-trainer): allowed:" in message


def test_values_are_shown_as_typed():
    message = str(_error({**PREBUILT, "pushImage": "False"}))
    assert "trainstack:pushImage = false: allowed:" in message
    assert "trainstack:workers = 'two': allowed" in str(_error({**PUSHED, "workers": "two"}))
    message = str(_error({**PUSHED, "nodeSelector": '{"a": 1}'}))
    assert """trainstack:nodeSelector = '{"a": 1}': allowed""" in message
