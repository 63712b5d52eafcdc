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
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_AUTHORITY_END = re.compile(r"[/?#]")


def display_url(url: str) -> str:
    """``url`` without userinfo (``user:password@``) and without its query string; the
    scheme, host, port, path and fragment stay. Text that is no URL is returned as is.

    Userinfo ends at the *last* ``@`` after ``scheme://``: a password with an unencoded
    ``/``, ``?`` or ``#`` (``https://u:pa/ss@host``) ends urlsplit's host early, so the
    rest of it would look like a path or fragment. When that ``@`` lies past what urlsplit
    takes for the host (such a password, or an ``@`` in a path or query), only what
    follows it is certain: the shown URL starts ``scheme://...@`` to say something was
    dropped there."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return url
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]  # as urlsplit reads it
    if not authority:  # scheme:///path: no host, so no userinfo either
        return url
    _, at, tail = rest.rpartition("@")
    try:
        parts = urlsplit(f"{scheme}://{tail}")
    except ValueError:  # e.g. an unbalanced '[' in the host: show the scheme only
        return f"{scheme}://..."
    if not parts.netloc:
        return f"{scheme}://..."
    marker = "...@" if at and "@" not in authority else ""
    return urlunsplit((parts.scheme, marker + parts.netloc, parts.path, "", parts.fragment))


def redact_urls(text: str) -> str:
    """``text`` with :func:`display_url` applied to every URL in it."""
    return _URL_IN_TEXT.sub(lambda match: display_url(match.group(0)), text)
