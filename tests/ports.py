"""Loopback ports for the servers the tests start (Prosody, Synapse, webhooks).

A port picked free can be taken by another process before the server binds it (another
suite runs beside this one): `start_retrying` picks new ports and starts again.
"""

from __future__ import annotations

import socket
from collections.abc import Callable


class PortTaken(RuntimeError):
    """The server could not bind its port: something else holds it."""


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on at the moment of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_retrying(
    start: Callable[[], None], repick: Callable[[], None], attempts: int = 3
) -> None:
    """`start()`; while it raises PortTaken, `repick()` the ports and try again."""
    for attempt in range(1, attempts + 1):
        try:
            start()
            return
        except PortTaken:
            if attempt == attempts:
                raise
            repick()
