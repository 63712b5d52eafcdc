"""Parsers for single `trainstack:` values.

`pulumi config set workers 3` stores the *string* "3" and structured values arrive as
JSON strings, so every parser accepts strings first and returns a typed value, or raises
the ConfigError that names the key and what is allowed. Rules that involve several keys
live in infra/config/stack_config.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from infra.config import labels
from infra.config.errors import invalid
from trainer.contract.layout import bucket_names
from trainer.contract.urls import DOWNLOAD_URL_RULE, BadURL, display_url, download_url

CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
BYTES = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = labels.DNS_SUBDOMAIN
DURATION = re.compile(r"^(\d+)(s|m|h)$")
# The Training Operator's v1 line from the first release that has PyTorchJob (v1.3.0).
OPERATOR_VERSION = re.compile(r"^v1\.(\d+)\.(\d+)$")
FIRST_OPERATOR_MINOR = 3
ACCESS_KEY = re.compile(r"^\S{1,128}$")
REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")

# An image reference as Docker's distribution/reference grammar spells it.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::\d+)?"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}))?$"
)
# Namespaces the stack must not take over: it creates its namespace, fences every pod in it
# with default-deny and deletes it on destroy. kubeflow: the Training Operator's (webhook);
# kubeflow-system: Kubeflow Trainer v2's and JobSet's.
RESERVED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "kubeflow",
                       "kubeflow-system")

Parser = Callable[[str, Any], Any]
"""``parse(key, raw) -> value``; raises the ConfigError naming ``key``. Every parser has an
``allowed`` attribute: what it accepts, in the words its error uses (the configuration
reference prints it)."""


def allows(allowed: str) -> Callable[[Parser], Parser]:
    """Give a parser its ``allowed`` text."""
    def mark(parse: Parser) -> Parser:
        parse.allowed = allowed
        return parse

    return mark


@dataclass(frozen=True)
class ImageReference:
    """`[registry/]path[:tag][@digest]`; `registry` is only set when the first part is a
    host (has a '.' or ':', or is `localhost`), as Docker decides."""

    registry: str | None
    path: str
    tag: str | None
    digest: str | None


def parse_image_reference(text: str) -> ImageReference | None:
    match = _REFERENCE.fullmatch(text)
    if not match:
        return None
    domain, path = match.group("domain"), match.group("path")
    if domain and not ("." in domain or ":" in domain or domain == "localhost"):
        path, domain = f"{domain}/{path}", None  # `team/app`: a Docker Hub path, no host
    return ImageReference(domain, path, match.group("tag"), match.group("digest"))


def int_at_least(minimum: int) -> Parser:
    @allows(f"an integer >= {minimum}")
    def parse(key: str, raw: Any) -> int:
        text = str(raw).strip()
        if isinstance(raw, bool) or not re.fullmatch(r"[+-]?\d+", text) or int(text) < minimum:
            raise invalid(key, parse.allowed, raw)
        return int(text)

    return parse


@allows("a number > 0 (e.g. 0.1)")
def positive_float(key: str, raw: Any) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise invalid(key, positive_float.allowed, raw)
    return value


@allows("a number of percentage points from 0 to 100 (e.g. 10)")
def percentage_points(key: str, raw: Any) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 100:
        raise invalid(key, percentage_points.allowed, raw)
    return value


@allows("true or false")
def boolean(key: str, raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text not in ("true", "false"):
        raise invalid(key, boolean.allowed, raw)
    return text == "true"


def choice(options: tuple[str, ...], allowed: str | None = None) -> Parser:
    @allows(allowed or ", ".join(options))
    def parse(key: str, raw: Any) -> str:
        if raw not in options:
            raise invalid(key, parse.allowed, raw)
        return raw

    return parse


def pattern(regex: re.Pattern, allowed: str) -> Parser:
    @allows(allowed)
    def parse(key: str, raw: Any) -> str:
        text = str(raw)
        if not regex.fullmatch(text):
            raise invalid(key, allowed, raw)
        return text

    return parse


_BYTE_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
               "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
               "Ei": 2**60}


def quantity_bytes(text: str) -> int:
    """Bytes of a BYTES quantity (``4Gi`` -> 4294967296)."""
    number, unit = re.fullmatch(r"([\d.]+)([A-Za-z]*)", text).groups()
    return int(float(number) * _BYTE_UNITS[unit])


def nonzero_quantity(regex: re.Pattern, allowed: str) -> Parser:
    base = pattern(regex, allowed)

    @allows(allowed)
    def parse(key: str, raw: Any) -> str:
        text = base(key, raw)
        if float(re.match(r"[\d.]+", text).group()) <= 0:
            raise invalid(key, allowed, raw)
        return text

    return parse


def memory_at_least(minimum: str, allowed: str) -> Parser:
    """A memory quantity no smaller than `minimum` (e.g. "1" is one byte, not one GiB)."""
    base = pattern(BYTES, allowed)

    @allows(f"{allowed}, at least {minimum} (a bare number is bytes)")
    def parse(key: str, raw: Any) -> str:
        text = base(key, raw)
        if quantity_bytes(text) < quantity_bytes(minimum):
            raise invalid(key, parse.allowed, raw)
        return text

    return parse


@allows("a DNS-1123 label (a-z, 0-9, '-') for a namespace the stack owns: not "
        f"{', '.join(RESERVED_NAMESPACES[:-1])} or {RESERVED_NAMESPACES[-1]} (the stack fences "
        "every pod of it and deletes it on destroy)")
def namespace(key: str, raw: Any) -> str:
    """The stack's own namespace: a DNS-1123 label no one else owns."""
    text = str(raw)
    if not DNS_LABEL.fullmatch(text) or text in RESERVED_NAMESPACES:
        raise invalid(key, namespace.allowed, raw)
    return text


@allows("a duration > 0 in s, m or h, such as 30m, 1h or 900s")
def duration(key: str, raw: Any) -> str:
    """A Pulumi custom timeout such as `30m`, `1h`, `900s` (> 0)."""
    match = DURATION.fullmatch(str(raw).strip())
    if not match or int(match.group(1)) == 0:
        raise invalid(key, duration.allowed, raw)
    return match.group(0)


# Query parameters that carry credentials: presigned S3/GCS URLs (X-Amz-Signature,
# X-Amz-Credential, X-Goog-Signature), Azure SAS (sig), CloudFront (Signature,
# Key-Pair-Id), tokens and keys of any name.
_CREDENTIAL_PARAM = re.compile(r"(?i)sig|token|key|credential|auth|pass|secret|session")


def _shown_url(raw: Any) -> str:
    """A refused URL as its error shows it: without userinfo and query when it has either
    (they may be credentials), control characters escaped (the error is one line)."""
    text = str(raw)
    if "@" in text or "?" in text:
        text = f"{display_url(text)} (user:password and query not shown)"
    return text.encode("unicode_escape").decode("ascii")


@allows("an http(s) URL of a file in the dataset's format, without credentials (a URL "
        "with credentials goes in a Secret: datasetSourceSecret)")
def dataset_url(key: str, raw: Any) -> str:
    """trainer.contract.urls.download_url's rule (the ingest checks the same), and no
    credentials: they would be in the ingest Job's command, the rendered YAML, the Pulumi
    state and the logs. Refused without echoing them."""
    try:
        text = download_url(str(raw))
    except BadURL as problem:
        raise invalid(key, f"{DOWNLOAD_URL_RULE}, of a file in the dataset's format "
                           f"(here: {problem})", _shown_url(raw)) from None
    parts = urlsplit(text)
    params = [name for name, _, _ in (p.partition("=") for p in parts.query.split("&"))]
    if "@" in parts.netloc or any(_CREDENTIAL_PARAM.search(n) for n in params if n):
        raise invalid(key, "a URL without credentials (no user:password@, no signed query "
                           "such as X-Amz-Signature, sig or token): put such a URL in a Secret "
                           "(key TRAINSTACK_DATASET_SOURCE) and set datasetSourceSecret",
                      _shown_url(raw))
    return text


@allows("https://HOST[:PORT] or http://HOST:PORT of an S3-compatible API (a host name or "
        "IPv4 address; no path, query, or credentials in the URL)")
def store_endpoint(key: str, raw: Any) -> str:
    """`https://host[:port]` or `http://host:port`: an S3 API's root, nothing else."""
    allowed = store_endpoint.allowed
    text = str(raw).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise invalid(key, allowed, raw) from None
    if (parts.scheme not in ("http", "https") or parts.username or parts.password
            or parts.path not in ("", "/") or parts.query or parts.fragment
            or not _HOST.fullmatch(parts.hostname or "") or (port is not None and port == 0)
            or (parts.scheme == "http" and port is None)):
        raise invalid(key, allowed, raw)
    return f"{parts.scheme}://{parts.netloc}"


@allows("a prefix that keeps every bucket name valid under S3's naming rules (lower-case "
        "letters, digits, '-' and '.'), such as acme-ml-")
def bucket_prefix(key: str, raw: Any) -> str:
    text = str(raw)
    try:
        bucket_names(text)
    except ValueError as e:
        raise invalid(key, f"a prefix that keeps every bucket name valid: {e}", raw) from None
    return text


@allows("a release tag of the Training Operator's v1 line from v1.3.0 on (the first with "
        "PyTorchJob), such as v1.8.1 or v1.9.0")
def operator_version(key: str, raw: Any) -> str:
    match = OPERATOR_VERSION.fullmatch(str(raw))
    if not match or int(match.group(1)) < FIRST_OPERATOR_MINOR:
        raise invalid(key, operator_version.allowed, raw)
    return str(raw)


@allows("an image reference such as registry.example.com/ml/trainstack-trainer (with "
        "buildImage false: ...@sha256:<64 hex> or ...:<tag>)")
def image_reference(key: str, raw: Any) -> str:
    if parse_image_reference(str(raw)) is None:
        raise invalid(key, image_reference.allowed, raw)
    return str(raw)


@allows("an image reference of an MLflow server with boto3, such as "
        "ghcr.io/mlflow/mlflow:v3.17.2-full@sha256:<64 hex digits>")
def mlflow_image(key: str, raw: Any) -> str:
    if parse_image_reference(str(raw)) is None:
        raise invalid(key, mlflow_image.allowed, raw)
    return str(raw)


@allows("a directory for the rendered YAML, e.g. rendered (relative to the project root) "
        "or /abs/path")
def directory(key: str, raw: Any) -> str:
    text = str(raw).strip()
    if not text or "\0" in text or text in (".", "/"):
        raise invalid(key, directory.allowed, raw)
    return text
