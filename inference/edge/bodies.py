"""Request bodies in flight: bounded memory, bounded time.

A request reserves its body's size (Content-Length, or the cap when it declares none) from
one budget shared by every request (``--upload-memory-mb``) before a byte of the body is
read, and holds it until it is answered; a request the budget cannot take now is refused
at once (503 with ``Retry-After``) without reading its body. While it is read, a body that
sends nothing for ``upload_idle_timeout_s``, or is not complete after
``upload_read_timeout_s``, is dropped (408) and its reservation freed. So half-sent uploads
hold at most the budget (plus the parser's copy of a body while it is parsed), and a
stalled client holds its share only for the idle timeout.

``POST /predict`` reads its body with :class:`BodyReader` itself; :class:`BoundedBodies`
(middleware) reads every other body the same way before the app sees it, so Gradio's own
routes (``/gradio_api/upload``, ``/gradio_api/queue/join``, its login, ...) get the same
limits, from the same budget, and receive only complete bodies: a stalled upload never
reaches Gradio's parser, which would leave its half-written file in the upload folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from inference.serving.budget import MemoryBudget

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the file itself


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    """One uploaded file, at most."""
    memory_bytes: int
    """Every body in flight together, at most."""
    idle_timeout_s: float = 10.0
    """The longest a body may send nothing."""
    read_timeout_s: float = 60.0
    """The longest a whole body may take."""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "memory_bytes", "idle_timeout_s", "read_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"upload limit {name} must be > 0, got {getattr(self, name)!r}")
        if self.memory_bytes < self.body_cap:
            # Else every bigger upload, and every chunked one (it reserves the cap), is
            # refused as "busy" on an idle server, forever.
            raise ValueError(f"the upload memory budget ({self.memory_bytes / 2**20:g} MiB) must "
                             f"hold one whole upload ({self.body_cap / 2**20:g} MiB: the "
                             "largest file plus multipart overhead)")

    @property
    def body_cap(self) -> int:
        return self.max_bytes + MULTIPART_OVERHEAD


class UploadRefused(Exception):
    """The body is not (or no longer) read: answer ``status`` with ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class BodyReader:
    """Reads request bodies within :class:`UploadLimits`; see the module docstring."""

    def __init__(self, limits: UploadLimits):
        self.limits = limits
        self.budget = MemoryBudget(limits.memory_bytes)

    def _too_large(self) -> UploadRefused:
        return UploadRefused(413, "file_too_large",
                             f"the upload exceeds the {self.limits.max_bytes / 1e6:g} MB limit")

    @contextlib.asynccontextmanager
    async def body(self, request: Request) -> AsyncIterator[bytes]:
        """The whole body, its share of the budget held until the ``with`` block ends."""
        cap = self.limits.body_cap
        declared = request.headers.get("content-length")
        size = int(declared) if declared and declared.isdigit() else None
        if size is not None and size > cap:
            raise self._too_large()
        with self.budget.hold_if_free(cap if size is None else size) as held:
            if not held:
                raise UploadRefused(
                    503, "uploads_busy", "too many uploads are being received right now "
                    f"(together at most {self.limits.memory_bytes / 2**20:g} MiB); retry shortly",
                    headers={"Retry-After": "1"})
            yield await self._read(request, cap)

    async def _read(self, request: Request, cap: int) -> bytes:
        limits = self.limits
        deadline = time.monotonic() + limits.read_timeout_s
        chunks = request.stream().__aiter__()
        body = bytearray()
        while True:
            left = deadline - time.monotonic()
            wait = min(limits.idle_timeout_s, left)
            try:
                if wait <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(anext(chunks, None), wait)
            except TimeoutError:
                raise UploadRefused(
                    408, "upload_timeout", "the upload stalled: no data for "
                    f"{limits.idle_timeout_s:g} s, or not complete after "
                    f"{limits.read_timeout_s:g} s; send it again") from None
            except ClientDisconnect:
                raise UploadRefused(400, "client_disconnected",
                                    "the client went away before the upload ended") from None
            if chunk is None:
                return bytes(body)
            body += chunk
            if len(body) > cap:
                raise self._too_large()


def has_body(scope: dict) -> bool:
    """Whether the request sends a body (HTTP/1.1: a Content-Length above 0, or chunked)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")):
            return True
    return False


# With an access token, a browser that has not signed in may send only small bodies (the
# login form), from a small budget of their own: it never takes the shared one from users.
GUEST_LIMITS = UploadLimits(max_bytes=64 * 1024, memory_bytes=2 * 2**20,
                            idle_timeout_s=10.0, read_timeout_s=30.0)


class GuestReader(BodyReader):
    """The guests' reader: a body too big for a guest is a request to sign in first."""

    def _too_large(self) -> UploadRefused:
        return UploadRefused(401, "unauthorized", "sign in to the app first: before that, "
                             f"requests may send at most {self.limits.max_bytes // 1024} KiB")


class BoundedBodies:
    """Pure ASGI middleware: each body reaches the app whole, read by ``reader`` (see the
    module docstring), except on ``own_paths``, whose routes read theirs with it themselves.
    ``after`` runs once each such request is answered (the upload cache's trim). With
    ``signed_in`` (an access token is set), a request it says is not signed in is read by
    a guest reader within GUEST_LIMITS instead."""

    def __init__(self, app: Any, reader: BodyReader, own_paths: frozenset[str],
                 after: Callable[[], Any] = lambda: None,
                 signed_in: Callable[[dict], bool] | None = None):
        self.app, self.reader, self.own_paths, self.after = app, reader, own_paths, after
        self.signed_in = signed_in
        self.guests = GuestReader(GUEST_LIMITS)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or not has_body(scope)
                or scope["path"].rstrip("/") in self.own_paths):
            await self.app(scope, receive, send)
            return
        reader = (self.reader if self.signed_in is None or self.signed_in(scope)
                  else self.guests)
        try:
            async with reader.body(Request(scope, receive)) as body:
                await self.app(scope, replay(body, receive), send)
        except UploadRefused as e:
            await JSONResponse({"error": e.code, "detail": e.detail}, status_code=e.status,
                               headers=e.headers)(scope, receive, send)
        finally:
            self.after()


def replay(body: bytes, receive: Any) -> Callable[[], Any]:
    """An ASGI ``receive`` that gives ``body`` in one message, then waits for the client
    to go away (what a streaming response listens for)."""
    sent = False

    async def receive_replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_replayed
