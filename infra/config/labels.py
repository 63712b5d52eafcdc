"""What the API server accepts as a label key or value, and in a toleration.

The rules of k8s.io/apimachinery's validation.IsQualifiedName / IsValidLabelValue and of
core/v1 validateTolerations, so `parse_config` refuses (naming the key) what the server
would refuse only once the operator creates the pods (infra/config/values.py uses them;
tests/cluster/test_validation.py checks them against a real API server).
"""

from __future__ import annotations

import re
from typing import Any

DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_KEY_RULE = ("an optional DNS prefix and '/', then 1-63 letters, digits, '-', '_' or '.', "
                  "starting and ending with a letter or digit, e.g. nvidia.com/gpu.product")
LABEL_VALUE_RULE = ("empty or 1-63 letters, digits, '-', '_' or '.', starting and ending with "
                    "a letter or digit, e.g. NVIDIA-A100-SXM4-80GB")


def is_label_key(text: str) -> bool:
    """A qualified name, as the API server checks label, nodeSelector and toleration keys:
    an optional DNS-subdomain prefix and '/', then 1-63 of [A-Za-z0-9-_.], alphanumeric at
    both ends (k8s.io/apimachinery validation.IsQualifiedName)."""
    prefix, _, name = text.rpartition("/")
    if "/" in text and not (prefix and DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return bool(_LABEL_NAME.fullmatch(name))


def is_label_value(text: str) -> bool:
    """Empty or 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends (IsValidLabelValue)."""
    return text == "" or bool(_LABEL_NAME.fullmatch(text))


def toleration_problem(item: dict[str, Any]) -> str | None:
    """What the API server would refuse in one toleration (core/v1 validateTolerations)."""
    operator, toleration_key = item.get("operator", "Equal"), item.get("key", "")
    if not isinstance(toleration_key, str) or not isinstance(item.get("value", ""), str):
        return "key and value are strings"
    if toleration_key and not is_label_key(toleration_key):
        return f"key {toleration_key!r} is not a label key ({LABEL_KEY_RULE})"
    if operator == "Exists" and item.get("value"):
        return "operator Exists takes no value (it matches any value of the key)"
    if operator == "Equal" and not toleration_key:
        return "operator Equal needs a key (only Exists may leave it out: tolerate every taint)"
    if operator == "Equal" and not is_label_value(item.get("value", "")):
        return f"value {item['value']!r} is not a label value ({LABEL_VALUE_RULE})"
    if "tolerationSeconds" in item and (
            item.get("effect") != "NoExecute" or isinstance(item["tolerationSeconds"], bool)
            or not isinstance(item["tolerationSeconds"], int)):
        return "tolerationSeconds (an integer) only with effect NoExecute"
    return None
