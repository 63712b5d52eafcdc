"""Optional access control: ``TRAINSTACK_AUTH_TOKEN`` (docs/architecture.md, "Access control").

Unset or empty: nobody is asked for anything. Set:

- the REST API (``/predict``, ``/metrics``, FastAPI's ``/docs`` and ``/openapi.json``: every
  route of the FastAPI app itself) requires ``Authorization: Bearer <token>``, else 401
  with a JSON error;
- the Gradio UI (everything mounted at ``/``) asks for a login: any user name, the token as
  the password (Gradio's own auth: a login page, then a session cookie);
- ``/healthz`` and ``/readyz`` stay open: the kubelet's probes carry no credentials.

``/metrics`` needs the token too: the prediction counts by class tell what users upload,
and Prometheus can send a bearer token (``authorization: {credentials_file: ...}``).

Tokens are compared in constant time (``hmac.compare_digest``) and never logged; the
settings that hold one keep it out of their ``repr``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Secret

from trainer.contract.errors import ConfigError
from trainer.contract.layout import AUTH_TOKEN_ALLOWED, AUTH_TOKEN_ENV, auth_token_problem

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
LOGIN_MESSAGE = ("This app is protected. Enter any user name and the app's access token "
                 f"({AUTH_TOKEN_ENV}) as the password.")


def check_token(token: str | None) -> str | None:
    """The token to require, or None for no access control (unset or empty).

    The stack's rule (trainer.contract.layout.auth_token_problem): long enough not to be guessed,
    visible ASCII so it fits an HTTP header as it is. The error never shows the token.
    """
    if not token:
        return None
    problem = auth_token_problem(token)
    if problem:
        raise ConfigError(f"{AUTH_TOKEN_ENV} {problem}; allowed: {AUTH_TOKEN_ALLOWED}",
                          key=AUTH_TOKEN_ENV)
    return token


def same_token(given: bytes, token: bytes) -> bool:
    return hmac.compare_digest(given, token)


def gradio_login(token: str) -> Callable[[str, str], bool]:
    """Gradio's ``auth`` callable: any user name, the token as the password."""
    expected = token.encode()

    def login(username: str, password: str) -> bool:
        return same_token(password.encode("utf-8", "surrogateescape"), expected)

    return login


def gradio_session(app: Any) -> Callable[[dict], bool]:
    """Whether a request carries a session of the Gradio UI mounted on ``app`` (the cookie
    its login sets, still one Gradio knows): the upload limits keep the shared budget for
    those (inference.edge.bodies.BoundedBodies)."""
    from starlette.routing import Mount

    ui = next(route.app for route in app.routes if isinstance(route, Mount)
              and hasattr(route.app, "tokens") and hasattr(route.app, "cookie_id"))
    names = (f"access-token-{ui.cookie_id}".encode(),
             f"access-token-unsecure-{ui.cookie_id}".encode())

    def signed_in(scope: dict) -> bool:
        for name, value in scope.get("headers", []):
            if name.lower() != b"cookie":
                continue
            for part in value.split(b";"):
                key, _, token = part.strip().partition(b"=")
                if key in names and token.decode("latin-1") in ui.tokens:
                    return True
        return False

    return signed_in


def bearer_of(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` header, else None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


class BearerAuthMiddleware:
    """Pure ASGI: requires the token on the FastAPI app's own routes (see module docstring).

    ``api_paths``: the routes of the FastAPI app that are not mounts, without a trailing
    slash (Gradio is a mount and asks for its own login).
    """

    def __init__(self, app: Any, token: Secret, api_paths: set[str]):
        self.app, self.token, self.api_paths = app, str(token).encode(), api_paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or path in OPEN_PATHS
                or path.rstrip("/") not in self.api_paths):
            await self.app(scope, receive, send)
            return
        given = bearer_of(scope.get("headers", []))
        if given is not None and same_token(given, self.token):
            await self.app(scope, receive, send)
            return
        detail = ("send the app's access token as the header 'Authorization: Bearer <token>'"
                  if given is None else "the bearer token is not this app's access token")
        body = json.dumps({"error": "unauthorized", "detail": detail}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="trainstack"')]})
        await send({"type": "http.response.body", "body": body})


LOGIN_TITLE = "trainstack · sign in"


class LoginTitleMiddleware:
    """Pure ASGI: gives Gradio's login page a title (its own has none: the login page's
    config carries no app title). Only HTML pages of the UI without a <title> of their own
    are touched; once signed in, Gradio sets the app's title itself."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or scope["path"] != "/":
            await self.app(scope, receive, send)
            return
        start: dict = {}
        chunks: list[bytes] = []

        async def hold(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _with_title(b"".join(chunks), dict(start.get("headers", [])))
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            await send({**start, "headers": [*headers,
                                             (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, hold)


def _with_title(body: bytes, headers: dict[bytes, bytes]) -> bytes:
    if (not headers.get(b"content-type", b"").startswith(b"text/html")
            or b"<title" in body or b'"auth_required":true' not in body.replace(b" ", b"")):
        return body
    return body.replace(b"<head>", f"<head><title>{LOGIN_TITLE}</title>".encode(), 1)
