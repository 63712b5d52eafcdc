"""URLs as they may be shown (the one place that strips credentials from a URL), and the
one rule for a dataset's download URL.

A URL a user configures may carry secrets: basic-auth userinfo
(``https://user:password@host``, e.g. an external MLflow's ``MLFLOW_TRACKING_URI``) or a
signed query string (``?X-Amz-Signature=...``). Whatever is logged, stored or shown (log
lines, error messages, the progress record's MLflow link, the app's pages) goes through
:func:`display_url` (one URL) or :func:`redact_urls` (every URL inside a text, such as a
client library's error message); only the code that connects sees the URL itself.
:func:`download_url` is the rule the stack (`datasetSource`) and the ingest (`--source`)
both check a download URL with, so one cannot take what the other refuses. Stdlib only.
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


DOWNLOAD_SCHEMES = ("http", "https")
DOWNLOAD_URL_RULE = ("an http(s) URL: http:// or https:// (in any case), a host name or IP "
                     "address ([IPv6] in brackets), an optional port from 1 to 65535, no "
                     "spaces or control characters, and an '@' only to end user:password@ "
                     "(percent-encode '/', '?', '#' and '@' inside them)")
_HOST_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*\.?")


class BadURL(ValueError):
    """A URL that breaks :data:`DOWNLOAD_URL_RULE`; the message names the part that does,
    without repeating the URL (callers show :func:`display_url` of it)."""


def download_url(text: str) -> str:
    """The one rule for a dataset's download URL, checked by the stack (`datasetSource`)
    and by the ingest (`--source`, or the URL from `datasetSourceSecret`): ``text`` with
    its scheme lower-cased, or :class:`BadURL` naming what breaks the rule.

    It refuses what http clients would read differently from urlsplit (a password with an
    unencoded '/', '?' or '#' makes part of it a path, and may send the rest to another
    host) and what would only fail later, or crash the stack's own parsing (a bad port, an
    unbalanced '['). Credentials are allowed here: whether a URL may carry them is the
    caller's rule (the stack refuses them in `datasetSource`; a Secret may hold them)."""
    if any(c.isspace() or not c.isprintable() for c in text):
        raise BadURL("it has a space or control character (percent-encode a space: %20)")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in DOWNLOAD_SCHEMES:
        raise BadURL("only http:// and https:// URLs are downloaded")
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    if rest.count("@") > 1 or "@" in rest[len(authority):]:
        raise BadURL("it has an '@' that does not end user:password@ (an unencoded '/', "
                     "'?', '#' or '@' in a password: percent-encode it)")
    url = f"{scheme.lower()}://{rest}"
    try:
        parts = urlsplit(url)
    except ValueError:
        raise BadURL("its host is no valid address in brackets (only [IPv6])") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise BadURL("its port is no number from 1 to 65535")
    host = parts.hostname or ""
    if not host or not (authority.rpartition("@")[2].startswith("[")
                        or _HOST_NAME.fullmatch(host)):
        raise BadURL("it has no valid host name or IP address")
    return url
