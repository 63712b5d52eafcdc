"""Stack configuration: every `trainstack:` key, parsed once into a validated dataclass.

Components never read config themselves: they get typed Args built from a StackConfig.
This module reads the keys from the engine and parses them through the documented fields of
infra/config/stack_config.py (the rules between keys are checked when one is made).
Secret values never enter the dataclass (StackSecrets carries them as
secret Outputs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pulumi

from infra.config import values as v
from infra.config.errors import values_hidden
from infra.config.stack_config import StackConfig
from trainer.contract.errors import ConfigError
from trainer.contract.layout import AUTH_TOKEN_ALLOWED, auth_token_problem

NAMESPACE = "trainstack"
invalid = v.invalid  # re-exported: the error every check raises


def secret(key: str, doc: str, allowed: str) -> Any:
    """A secret `trainstack:` key (`pulumi config set --secret`), documented like a setting."""
    return field(default=None, metadata={"key": key, "group": "Secrets", "doc": doc,
                                         "allowed": allowed})


@dataclass(frozen=True)
class StackSecrets:
    """Secret config values, only as secret Outputs (encrypted in state, masked in logs)."""

    minio_root_password: pulumi.Output[str] | None = secret(
        "minioRootPassword", "The in-cluster MinIO's root password; generated when unset.",
        "at least 8 characters, not the well-known default")
    store_secret_key: pulumi.Output[str] | None = secret(
        "storeSecretKey", "With storeEndpoint and storeAccessKey: the secret key of the "
        "Secret the stack makes.", "a non-empty secret access key")
    inference_auth_token: pulumi.Output[str] | None = secret(
        "inferenceAuthToken", "The app's access token: the API wants it as a bearer token, the "
        "UI a login; unset, the app answers whoever reaches it.", AUTH_TOKEN_ALLOWED)


SECRET_FIELDS = {f.metadata["key"]: f for f in fields(StackSecrets)}
SECRET_KEYS = tuple(SECRET_FIELDS)


# config key -> (dataclass field, parser): every documented field of StackConfig.
FIELDS: dict[str, tuple[str, v.Parser]] = {
    f.metadata["key"]: (f.name, f.metadata["parser"]) for f in fields(StackConfig)
    if "key" in f.metadata
}
KNOWN_KEYS = tuple(FIELDS) + SECRET_KEYS


def parse_config(raw: Mapping[str, Any], secrets: frozenset[str] = frozenset(),
                 hidden: frozenset[str] = frozenset()) -> StackConfig:
    """Validate `{key: value}` (keys without the `trainstack:` prefix, values as stored).

    `secrets` names the SECRET_KEYS that were given (their values are read separately).
    `hidden` names the keys of `raw` whose value the engine holds as a secret: no error
    shows them, even for a key the stack does not know (a mistyped secret key).
    Unknown keys are errors: a typo such as `worker` would otherwise be silently ignored.
    """
    with values_hidden(hidden):
        unknown = sorted(set(raw) - set(FIELDS))
        if unknown:
            raise invalid(unknown[0], "one of " + ", ".join(KNOWN_KEYS), raw[unknown[0]])
        parsed = {
            name: _parsed(key, parser, raw[key], key in hidden)
            for key, (name, parser) in FIELDS.items()
            if raw.get(key) not in (None, "")
        }
        return StackConfig(**parsed, secrets=frozenset(secrets),
                           given=frozenset(k for k in raw if raw[k] not in (None, "")))


def _parsed(key: str, parser: v.Parser, raw: Any, hidden: bool) -> Any:
    """`raw` parsed; a secret value's error gives the parser's general rule, as the
    specific one may quote part of the value (a label key of nodeSelector)."""
    if not hidden:
        return parser(key, raw)
    try:
        return parser(key, raw)
    except ConfigError:
        raise invalid(key, parser.allowed, None, secret=True) from None


def raw_stack_config() -> dict[str, Any]:
    """Every `trainstack:*` value the engine passed in (pulumi.Config cannot enumerate).

    The CLI hands config to the program through the runtime config map / PULUMI_CONFIG;
    reading both lets unknown keys be reported. Secret values are dropped here: they are
    read separately with Config.get_secret so they stay wrapped in a secret Output.
    """
    from pulumi.runtime import config as runtime_config

    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{NAMESPACE}:"
    return {
        key[len(prefix):]: value
        for key, value in merged.items()
        if key.startswith(prefix) and key[len(prefix):] not in SECRET_KEYS
    }


def secret_valued(keys: Iterable[str]) -> frozenset[str]:
    """Those of `keys` whose value the engine marks secret (`pulumi config set --secret`)."""
    return frozenset(key for key in keys if _is_secret(f"{NAMESPACE}:{key}"))


def load() -> tuple[StackConfig, StackSecrets]:
    """Read and validate the stack config once, before any resource is registered."""
    from pulumi.runtime import config as runtime_config

    given = set()
    for key in SECRET_KEYS:
        # Check the plaintext now, then use it only as a secret Output.
        plain = runtime_config.get_config(f"{NAMESPACE}:{key}")
        if plain is not None:
            _check_secret(key, plain, _is_secret(f"{NAMESPACE}:{key}"))
            given.add(key)
    raw = raw_stack_config()
    hidden = secret_valued(raw)
    settings = parse_config(raw, frozenset(given), hidden)
    for message in settings.warnings():
        for key in hidden:  # a secret value never reaches the log either
            message = message.replace(str(raw[key]), "(secret value not shown)")
        pulumi.log.warn(message)
    config = pulumi.Config(NAMESPACE)
    return settings, StackSecrets(**{f.name: config.get_secret(key)
                                     for key, f in SECRET_FIELDS.items()})


def _is_secret(full_key: str) -> bool:
    from pulumi.runtime import config as runtime_config

    return (runtime_config.is_config_secret(full_key)
            or full_key in runtime_config.get_config_secret_keys_env())


def _check_secret(key: str, value: str, is_secret: bool) -> None:
    if not is_secret:
        # Stored in Pulumi.<stack>.yaml in plain text: refuse it, never echo it.
        raise invalid(key, f"a secret value: pulumi config set --secret {key} ... "
                           "(it is stored unencrypted now; set it again with --secret)",
                      None, secret=True)
    allowed = SECRET_FIELDS[key].metadata["allowed"]
    # MinIO refuses to start with a root password under 8 characters.
    if ((key == "minioRootPassword" and (len(value) < 8 or value == "minioadmin"))
            or (key == "storeSecretKey" and not value.strip())
            or (key == "inferenceAuthToken" and auth_token_problem(value))):
        raise invalid(key, allowed, value, secret=True)


__all__ = ["ConfigError", "StackConfig", "StackSecrets", "invalid", "load",
           "parse_config"]
