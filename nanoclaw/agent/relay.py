"""Inside the sandbox: a TCP proxy address on loopback, relayed to the host's /ipc/egress.sock.

Under the `allowlist` policy the sandbox's network namespace has only `lo`, so tools find
the host's egress proxy through HTTP(S)_PROXY pointing here; the host decides what passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from functools import partial
from pathlib import Path

RELAY_PORT = 3128
CHUNK = 65536
LINGER_S = 2.0
UNAVAILABLE = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 35\r\n"
    b"Connection: close\r\n\r\nnanoclaw egress proxy unavailable\r\n"
)


def proxy_env(port: int = RELAY_PORT) -> tuple[tuple[str, str], ...]:
    """The environment that sends tools (curl, pip, requests, git) through the relay."""
    url = f"http://127.0.0.1:{port}"
    local = "localhost,127.0.0.1,::1"
    return (
        ("HTTP_PROXY", url),
        ("HTTPS_PROXY", url),
        ("http_proxy", url),
        ("https_proxy", url),
        ("NO_PROXY", local),
        ("no_proxy", local),
    )


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Bytes from src to dst; at EOF half-close dst, on a broken connection close it."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except OSError:
        dst.close()


async def answer_and_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> None:
    """Send a last answer, then read and drop what the peer still sends before closing:
    closing a socket with unread input resets it, and the peer would never see the answer."""
    with contextlib.suppress(OSError, TimeoutError):
        writer.write(data)
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            while await reader.read(CHUNK):
                pass
    writer.close()


async def splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Tunnel both ways until the upstream side is done (it answers last), then close both."""
    upload = asyncio.create_task(_copy(client[0], upstream[1]))
    try:
        await _copy(upstream[0], client[1])
    finally:
        upload.cancel()
        await asyncio.gather(upload, return_exceptions=True)
        for writer in (client[1], upstream[1]):
            writer.close()


async def relay_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock: Path) -> None:
    """One tool connection, passed through unread to the egress socket."""
    try:
        upstream = await asyncio.open_unix_connection(str(sock))
    except OSError:
        await answer_and_close(reader, writer, UNAVAILABLE)
        return
    await splice((reader, writer), upstream)


async def serve(sock: Path, port: int, ready: threading.Event) -> None:
    server = await asyncio.start_server(partial(relay_one, sock=sock), "127.0.0.1", port)
    ready.set()
    async with server:
        await server.serve_forever()


def start_relay(sock: Path, port: int = RELAY_PORT, timeout: float = 5.0) -> str | None:
    """Serve the relay from a daemon thread; returns why it could not start, or None."""
    ready = threading.Event()
    failure: list[str] = []

    def run() -> None:
        try:
            asyncio.run(serve(sock, port, ready))
        except Exception as exc:  # reported to the caller, which carries on without egress
            failure.append(f"{exc.__class__.__name__}: {exc}")
            ready.set()

    threading.Thread(target=run, name="egress-relay", daemon=True).start()
    if not ready.wait(timeout):
        return "relay did not start in time"
    return failure[0] if failure else None
