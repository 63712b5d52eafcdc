"""Ctrl-C during training: stop once, cleanly, and remember that it was asked for.

torchrun forwards the terminal's SIGINT to each worker (they run in sessions of their own).
The first one raises KeyboardInterrupt as Python's default does; ``interrupted()`` then
tells the loop to mark the run's progress record as interrupted, and the entry point to
print one line instead of a traceback when the interruption surfaced as another error
(a peer that stopped first breaks a collective: gloo raises a RuntimeError). Further
SIGINTs are ignored while the process winds down (torchrun kills it after its own grace
period if that takes too long).
"""

from __future__ import annotations

import signal

_received = False


def _on_sigint(signum, frame) -> None:
    global _received
    if _received:
        return
    _received = True
    raise KeyboardInterrupt


def install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def interrupted() -> bool:
    """Whether this process got SIGINT."""
    return _received
