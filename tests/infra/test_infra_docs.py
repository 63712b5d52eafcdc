"""Every `pulumi config set` line of README.md and docs/**/*.md works as written with the
real Pulumi CLI, which refuses a plain value that "looks like a secret" (pulumi/pulumi
pkg/cmd/pulumi/config: `looksLikeSecret`): the key's last part matches
`(?i)passwd|pass|password|pwd|secret|token` and zxcvbn rates the value's first 16
characters at >= 80 bits, or >= 40 bits at >= 3 bits per character. Without `--secret` or
`--plaintext` the command fails."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest
from zxcvbn import zxcvbn

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
KEY_PATTERN = re.compile(r"(?i)passwd|pass|password|pwd|secret|token")
MAX_ENTROPY_CHECK_LENGTH = 16
ENTROPY_THRESHOLD = 80.0
ENTROPY_PER_CHAR_THRESHOLD = 3.0
COMMAND = re.compile(r"pulumi config set (?P<rest>[^`&|#\n]*)")


def entropy_bits(value: str) -> float:
    """zxcvbn's estimate in bits (the CLI's Go port reports bits; the PyPI zxcvbn reports
    guesses: bits = log2(guesses))."""
    return zxcvbn(value)["guesses_log10"] * math.log2(10)


def looks_like_secret(key: str, value: str) -> bool:
    if not KEY_PATTERN.search(key.rsplit(":", 1)[-1]):
        return False
    value = value[:MAX_ENTROPY_CHECK_LENGTH]
    if not value:
        return False
    bits = entropy_bits(value)
    return bits >= ENTROPY_THRESHOLD or (
        bits >= ENTROPY_THRESHOLD / 2 and bits / len(value) >= ENTROPY_PER_CHAR_THRESHOLD)


def config_set_commands() -> list[tuple[str, list[str]]]:
    """(where, arguments after `pulumi config set`) of every documented command."""
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in COMMAND.finditer(line):
                rest = match.group("rest").strip()
                try:
                    words = shlex.split(rest)
                except ValueError:  # "$(openssl rand -hex 16)" and the like: keep the words
                    words = rest.split()
                found.append((f"{path.relative_to(REPO_ROOT)}:{number}: {match.group(0).strip()}",
                              words))
    return found


def refused(words: list[str]) -> bool:
    flags = {w for w in words if w.startswith("--")}
    positional = [w for w in words if not w.startswith("-")]
    if flags & {"--secret", "--plaintext"} or len(positional) < 2:
        return False  # no value: the CLI prompts for it (hidden with --secret)
    key, value = positional[:2]
    return looks_like_secret(key, value)


def test_the_rule_flags_what_the_cli_refuses():
    assert looks_like_secret("trainstack:inferenceAuthToken", "3f9a7c2e1b4d8f6019ab")
    assert not looks_like_secret("trainstack:workers", "3f9a7c2e1b4d8f6019ab")  # not the key
    assert not looks_like_secret("storeCredentialsSecret", "aaaaaaaa")  # low entropy
    assert refused(["storeSecretKey", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"])
    assert not refused(["--plaintext", "storeSecretKey", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"])


def test_docs_have_config_set_commands():
    assert len(config_set_commands()) > 20


@pytest.mark.parametrize("where, words", config_set_commands(),
                         ids=[w for w, _ in config_set_commands()])
def test_every_documented_config_set_works_with_the_real_cli(where, words):
    """The entropy rule, and stricter: the PyPI zxcvbn (4.5) rates names such as
    `trainstack-s3` lower (34 bits) than the CLI's Go port (40 bits, 3.1 per character:
    refused), so a key the pattern matches must say --secret or --plaintext outright."""
    assert not refused(words), where
    positional = [w for w in words if not w.startswith("-")]
    if len(positional) >= 2 and KEY_PATTERN.search(positional[0].rsplit(":", 1)[-1]):
        assert {"--secret", "--plaintext"} & set(words), f"{where}: add --plaintext"
