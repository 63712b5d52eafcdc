"""Config errors as the real engine shows them: the Python language host prints a
`pulumi.RunError` as one `error:` line (no traceback; pulumi/pulumi
sdk/python/cmd/pulumi-language-python-exec, and pulumi.automation._server in .venv: `except
RunError: log.error(str(e))`), so every config error is one, on one line, naming the key
and showing values as the user typed them, never Python's reprs."""

from __future__ import annotations

import logging
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


# A value the engine holds as a secret (`pulumi config set --secret`), under any key.
SECRET_VALUE = "Tr0ub4dor&3-prod"
# (config, the key set with --secret, what the message still says is allowed)
SECRET_MISTAKES = [
    # a secret key mistyped: unknown to the stack, but the engine marks its value secret
    ({**PUSHED, "minioRootPasword": SECRET_VALUE}, "minioRootPasword", "one of workers, "),
    ({**PUSHED, "inferenceAuthTokn": SECRET_VALUE * 3}, "inferenceAuthTokn", "minioRootPassword"),
    # a setting the user chose to encrypt, refused by its parser or by a rule between keys
    ({**PUSHED, "workers": SECRET_VALUE}, "workers", "an integer >= 1"),
    ({**PUSHED, "nodeSelector": '{"' + SECRET_VALUE + '": "x"}'}, "nodeSelector", "label"),
    ({**PUSHED, "storeAccessKey": SECRET_VALUE}, "storeAccessKey", "unset without storeEndpoint"),
]


@pytest.mark.parametrize(("config", "key", "allowed"), SECRET_MISTAKES,
                         ids=[key for _, key, _ in SECRET_MISTAKES])
def test_a_value_the_engine_marks_secret_is_never_shown(config, key, allowed):
    error = _error_as_secret(config, key)
    message = str(error)
    assert message.startswith(f"invalid config trainstack:{key} (secret value not shown): "
                              "allowed: "), message
    assert allowed in message.split(": allowed: ", 1)[1] and error.key == key
    assert SECRET_VALUE not in message and "Tr0ub4dor" not in message


def _error_as_secret(config: dict[str, str], key: str) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        render(config, secrets=(key,))
    return raised.value


def test_the_same_mistake_in_plain_text_is_shown_as_typed():
    message = str(_error({**PUSHED, "minioRootPasword": "typed-in-the-clear"}))
    assert "trainstack:minioRootPasword = 'typed-in-the-clear': allowed: one of " in message


def test_a_warning_about_a_secret_value_does_not_log_it(caplog):
    image = "ghcr.io/acme/private-trainstack:2026.11.1"
    with caplog.at_level(logging.WARNING):
        render({**PREBUILT, "image": image}, secrets=("image",))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("trainstack:image '(secret value not shown)' is a tag" in w for w in warnings)
    assert not [w for w in warnings if image in w]
