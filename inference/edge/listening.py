"""The app's listening socket, bound before anything loads (``serve`` and ``demo-check``)."""

from __future__ import annotations

import errno
import socket


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything loads: a port in use fails at once.
    ServeError names the address and what to do."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, OverflowError) as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e}; allowed: --host an address "
                         "of this machine (0.0.0.0, 127.0.0.1, ...), --port 0-65535") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ServeError(f"{host}:{port} is in use (another app, or an earlier `make "
                             "demo` still running?): stop it or pick another port (--port; "
                             "make demo PORT=...)") from None
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


class ServeError(Exception):
    """The server cannot start: one line for the user."""


def listening_at(sock: socket.socket) -> str:
    """Where the bound socket listens, as a user opens it."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        return (f"every interface, port {port}: http://localhost:{port}/ on this machine, "
                f"http://<this machine's address>:{port}/ from others")
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
