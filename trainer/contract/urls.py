"""URLs as they may be shown: the one place that strips credentials from a URL.

A URL a user configures may carry secrets: basic-auth userinfo
(``https://user:password@host``, e.g. an external MLflow's ``MLFLOW_TRACKING_URI``) or a
signed query string (``?X-Amz-Signature=...``). Whatever is logged, stored or shown (log
lines, error messages, the progress record's MLflow link, the app's pages) goes through
:func:`display_url` (one URL) or :func:`redact_urls` (every URL inside a text, such as a
client library's error message); only the code that connects sees the URL itself.
Stdlib only.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# A URL inside free text: scheme://, then up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def display_url(url: str) -> str:
    """``url`` without userinfo (``user:password@``) and without its query string; the
    scheme, host, port, path and fragment stay. Text that is no URL is returned as is."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced '[' in the host: show the scheme only
        scheme, sep, _ = url.partition("://")
        return f"{scheme}{sep}..." if sep else url
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", parts.fragment))


def redact_urls(text: str) -> str:
    """``text`` with :func:`display_url` applied to every URL in it."""
    return _URL_IN_TEXT.sub(lambda match: display_url(match.group(0)), text)
