"""The test servers survive a port taken between picking it and binding it: the first
start picks another port; a restart keeps its port (clients were told it)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from ports import PortTaken
from prosody import Prosody
from synapse import Synapse


@contextmanager
def taken(port: int) -> Iterator[None]:
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        yield


def prosody(path: Path) -> Prosody:
    return Prosody(path)


def synapse(path: Path) -> Synapse:
    return Synapse(path)


@pytest.mark.parametrize("make", [prosody, synapse])
def test_a_taken_port_is_picked_again_on_the_first_start(
    tmp_path: Path, make: Callable[[Path], Prosody | Synapse]
) -> None:
    server = make(tmp_path)
    first = server.port
    with taken(first):
        with pytest.raises(PortTaken):
            server.start(attempts=1)
        assert server.proc is None
        server.start()
        try:
            assert server.port != first and server.proc is not None
            server.stop()
            with taken(server.port), pytest.raises(PortTaken):
                server.start()  # a restart keeps its port, so a clash there is an error
        finally:
            server.stop()
