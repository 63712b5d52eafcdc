"""The error every `trainstack:` config check raises, and how it shows a value.

Under the real engine a `pulumi.RunError` is printed by the Python language host as one
`error:` line without a traceback (pulumi-language-python-exec, and in this venv
pulumi/automation/_server.py: `except RunError: log.error(str(e))`), and `pulumi up` exits
non-zero; any other exception arrives inside ~20 lines of traceback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pulumi

from trainer.contract.errors import ConfigError


class StackConfigError(ConfigError, pulumi.RunError):
    """A config error of the Pulumi program. As a RunError the Python language host
    prints it as one `error:` line, without a traceback (pulumi-language-python-exec:
    `except pulumi.RunError as e: pulumi.log.error(str(e))`), and `pulumi up` exits 1."""


@dataclass(frozen=True)
class Default:
    """A value the user never set: shown as `(not set; default <value>)`."""

    value: Any


def _as_typed(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def shown(got: Any) -> str:
    """A value as the user typed it (`pulumi config set` stores strings): quoted text,
    `true`/`false` for a parsed boolean, JSON for a parsed list or object."""
    if isinstance(got, Default):
        return f"(not set; default {_as_typed(got.value)})"
    if got is None:
        return "(not set)"
    if isinstance(got, bool):
        return f"= {_as_typed(got)}"
    return f"= '{_as_typed(got)}'"


# Keys whose value the engine holds as a secret (`pulumi config set --secret`) while the
# config is checked: their errors never show the value, whatever the key.
_SECRET_VALUED: ContextVar[frozenset[str]] = ContextVar("secret_valued", default=frozenset())


@contextlib.contextmanager
def values_hidden(keys: frozenset[str]) -> Iterator[None]:
    """Within: every error about one of `keys` shows "(secret value not shown)"."""
    token = _SECRET_VALUED.set(_SECRET_VALUED.get() | keys)
    try:
        yield
    finally:
        _SECRET_VALUED.reset(token)


def invalid(key: str, allowed: str, got: Any, secret: bool = False) -> ConfigError:
    """The error for an invalid `trainstack:` setting: names the key and what is allowed."""
    secret = secret or key in _SECRET_VALUED.get()
    text = "(secret value not shown)" if secret else shown(got)
    return StackConfigError(f"invalid config trainstack:{key} {text}: allowed: {allowed}",
                            key=key)
