"""The egress proxy of the `allowlist` network policy: a unix socket served for one agent run.

`CONNECT host:port` tunnels and plain-HTTP absolute-URI requests reach only the group's
listed domains and their subdomains, on ports 80 and 443, at public addresses resolved
here on the host; anything else is answered 403 with the reason. `allowed()` decides; a
host refused only for not being listed may first be offered to an `Asker` (main's approval).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from nanoclaw.agent.relay import answer_and_close, splice
from nanoclaw.errors import SandboxError
from nanoclaw.sandbox.address import is_public

log = logging.getLogger(__name__)
WEB_PORTS = frozenset({80, 443})
MAX_HEAD = 16 * 1024
MAX_TUNNELS = 32
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
NUMERIC_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")  # what inet_aton reads as a number
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "host",
    }
)
PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
# Names that mean the host's own network wherever they resolve: never offered for approval.
LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "lan", "intranet", "onion")
Resolver = Callable[[str, int], Awaitable[list[str]]]
Refusal = tuple[int, str, str]  # status, target, reason


def host_name(name: str) -> str | None:
    """`name` as a lowercase DNS host name without the trailing dot, or None if it is not one.

    The last label must start with a letter, which also turns away IPv4 literals in all
    the spellings inet_aton accepts (`127.1`, `2130706433`, `0x7f.1`).
    """
    name = name.strip().lower().removesuffix(".")
    if not name or len(name) > 253 or not name.isascii():
        return None
    labels = name.split(".")
    if not all(LABEL_RE.match(label) for label in labels) or not labels[-1][0].isalpha():
        return None
    return name


def _is_ip_literal(host: str) -> bool:
    bare = host.strip().lower().removeprefix("[").removesuffix("]")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(bare)
        return True
    labels = bare.removesuffix(".").split(".")
    return bool(bare) and all(NUMERIC_RE.match(label) for label in labels)


def parse_domains(values: Iterable[str]) -> tuple[str, ...]:
    """The domains of an allowlist, normalised; ValueError names the first bad one."""
    out: dict[str, None] = {}
    for value in values:
        raw = value.strip()
        if not raw:
            continue
        if "*" in raw:
            raise ValueError(f"{raw!r}: no wildcards; a domain covers its subdomains already")
        if _is_ip_literal(raw):
            raise ValueError(f"{raw!r}: list domain names, not IP addresses")
        name = host_name(raw)
        if name is None:
            raise ValueError(f"{raw!r} is not a domain name like example.com")
        out[name] = None
    return tuple(out)


def allowed(
    host: str, port: int, domains: Collection[str], ports: Collection[int] = WEB_PORTS
) -> str | None:
    """None if `host:port` may be reached under the allowlist `domains`, else the reason."""
    if _is_ip_literal(host):
        return f"{host} is an IP address; only listed domain names are reachable"
    name = host_name(host)
    if name is None:
        return f"{host!r} is not a valid host name"
    if port not in ports:
        return f"port {port} is not allowed (only {', '.join(map(str, sorted(ports)))})"
    if not domains:
        return "this group's allowlist is empty"
    if not any(name == d or name.endswith("." + d) for d in domains):
        return f"{name} is not in this group's allowlist ({', '.join(domains)})"
    return None


def offerable(host: str, port: int, ports: Collection[int] = WEB_PORTS) -> bool:
    """Whether a host refused by `allowed()` may be offered for approval: a public-looking
    domain name on an allowed port. IP literals, bad names and ports, single labels and
    local names (`printer.local`, `localhost`) are refused at once, never offered."""
    name = host_name(host)
    if _is_ip_literal(host) or name is None or port not in ports or "." not in name:
        return False
    return not any(name == s or name.endswith("." + s) for s in LOCAL_SUFFIXES)


class Asker(Protocol):
    """Who decides about an unlisted host for one run (`approvals.RunApprovals`)."""

    async def ask(self, host: str, port: int, reason: str) -> str | None:
        """None to let `host:port` through, else why it stays refused; may wait long."""
        ...

    def close(self) -> None:
        """The run's proxy stopped: forget it."""
        ...


async def public_addresses(host: str, port: int) -> list[str]:
    """The host's DNS answer for `host`, minus loopback, private and link-local addresses.

    A listed domain whose name points into the host's own network must not open it up.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = dict.fromkeys(str(info[4][0]) for info in infos)
    return [address for address in found if is_public(address)]


@dataclass(frozen=True)
class Request:
    """What a client asked for; `head` is what to send upstream (empty for CONNECT)."""

    method: str
    host: str
    port: int
    head: bytes = b""


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def parse_request(head: bytes) -> Request:
    """A proxy request head (up to the blank line); ValueError says what is wrong."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise ValueError("malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise ValueError("only HTTP/1.x is spoken here")
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not host:
            raise ValueError("CONNECT needs host:port")
        return Request(method, host, _port(port))
    url = urlsplit(target)
    if url.scheme == "https":
        raise ValueError("use CONNECT for https")
    if url.scheme != "http" or not url.hostname:
        raise ValueError("this is a proxy: send CONNECT host:port or an absolute http:// URL")
    name, number = url.hostname, url.port  # .port raises ValueError when out of range
    number = 80 if number is None else _port(str(number))
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    fields = [line for line in lines[1:] if line]
    named = [(f.partition(":")[0].strip().lower(), f) for f in fields]
    dropped = {
        part.strip().lower()
        for n, f in named
        if n == "connection"
        for part in f.partition(":")[2].split(",")
    }
    kept = [f for n, f in named if n not in HOP_HEADERS and n not in dropped]
    authority = name if number == 80 else f"{name}:{number}"
    out = [f"{method} {path} {version}", f"Host: {authority}", *kept, "Connection: close", "", ""]
    return Request(method, name, number, "\r\n".join(out).encode("latin-1"))


def refusal(status: int, text: str) -> bytes:
    """The whole answer to a refused request: the status and the reason, in plain text."""
    body = f"nanoclaw egress: {text}\r\n".encode()
    return (
        f"HTTP/1.1 {status} {PHRASES[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class EgressProxy:
    """Serves one socket for one run; `stop()` closes it and every tunnel through it."""

    def __init__(
        self,
        domains: Collection[str],
        label: str = "",
        *,
        ports: Collection[int] = WEB_PORTS,
        resolve: Resolver = public_addresses,
        max_tunnels: int = MAX_TUNNELS,
        ask: Asker | None = None,
    ) -> None:
        self._domains = tuple(d for d in map(host_name, domains) if d is not None)
        self._label = label
        self._ports = frozenset(ports)
        self._resolve = resolve
        self._max = max_tunnels
        self._ask = ask
        self._server: asyncio.Server | None = None
        self._sock: Path | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self, sock: Path) -> None:
        """Serve `sock`, replacing whatever an earlier sandbox may have left at that name."""
        try:
            await asyncio.to_thread(_clear, sock)
            self._server = await asyncio.start_unix_server(self._accept, str(sock), limit=MAX_HEAD)
            os.chmod(sock, 0o600)
        except OSError as exc:
            raise SandboxError(f"cannot serve the egress proxy at {sock}: {exc}") from exc
        self._sock = sock

    async def stop(self) -> None:
        if self._ask is not None:
            self._ask.close()
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        if self._sock is not None:
            with contextlib.suppress(OSError):  # the sandbox may have put another thing there
                os.unlink(self._sock)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Our own task, not the one asyncio would wrap a coroutine in: Python 3.11 logs an
        # error when that one is cancelled, and stop() cancels every connection.
        task = asyncio.create_task(self.handle(reader, writer))
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: read its request, then refuse it or tunnel it to the end."""
        try:
            if len(self._clients) > self._max:
                refused: Refusal | None = (503, "", f"over {self._max} tunnels at once")
            else:
                refused = await self._serve(reader, writer)
            if refused is not None:
                status, target, reason = refused
                log.warning("egress %s refused %s: %s", self._label, target or "-", reason)
                await answer_and_close(reader, writer, refusal(status, reason))
        except OSError:
            pass
        finally:
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Refusal | None:
        try:  # asyncio.timeout: wait_for on 3.11 can drop a cancel (see Waker)
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.LimitOverrunError, ValueError):
            return 431, "", "request head too large"
        except (asyncio.IncompleteReadError, TimeoutError):
            return None
        try:
            req = parse_request(head)
        except ValueError as exc:
            return 400, "", str(exc)
        target = f"{req.host}:{req.port}"
        reason = allowed(req.host, req.port, self._domains, self._ports)
        asker = self._ask
        if reason is not None and asker is not None and offerable(req.host, req.port, self._ports):
            # Not resolved before the answer: a name nobody allowed is never looked up, so
            # DNS queries carry nothing out. A private address is still refused after it.
            reason = await asker.ask(host_name(req.host) or req.host, req.port, reason)
        if reason is not None:
            return 403, target, reason
        try:
            addresses = await self._resolve(host_name(req.host) or req.host, req.port)
        except OSError as exc:
            return 502, target, f"cannot resolve {req.host}: {exc}"
        if not addresses:
            return 403, target, f"{req.host} has no public address"
        upstream = await self._connect(addresses, req.port)
        if upstream is None:
            return 502, target, f"cannot connect to {target}"
        log.info("egress %s %s %s", self._label, req.method, target)
        if req.method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            upstream[1].write(req.head)
        await splice((reader, writer), upstream)
        return None

    async def _connect(
        self, addresses: list[str], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for address in addresses:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    return await asyncio.open_connection(address, port)
            except (OSError, TimeoutError):
                continue
        return None
