"""The `allowlist` network policy: the decision table, the egress proxy on a real unix socket,
the in-sandbox relay, and an agent in a real bwrap sandbox reaching only the listed domains.

Allowed targets are servers on 127.0.0.1; the proxy reaches them through a resolver handed
to its constructor (the default one refuses loopback, which is tested on its own).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import wait_for

from nanoclaw.agent.relay import relay_one, start_relay
from nanoclaw.app import agent_settings, model_client
from nanoclaw.cli.main import apply_setting
from nanoclaw.config import Settings
from nanoclaw.models import Group
from nanoclaw.sandbox.address import is_public
from nanoclaw.sandbox.egress import (
    EgressProxy,
    allowed,
    parse_domains,
    parse_request,
    public_addresses,
)
from nanoclaw.sandbox.launcher import Launcher, RunOptions
from nanoclaw.store.messages import Store

DOMAINS = ("example.com", "api.github.com")


@pytest.mark.parametrize(
    ("host", "port", "refused_because"),
    [
        ("example.com", 443, None),
        ("EXAMPLE.com.", 443, None),
        ("www.example.com", 443, None),
        ("a.b.example.com", 80, None),
        ("api.github.com", 443, None),
        ("github.com", 443, "not in this group's allowlist"),
        ("gist.github.com", 443, "not in this group's allowlist"),
        ("notexample.com", 443, "not in this group's allowlist"),
        ("example.com.evil.org", 443, "not in this group's allowlist"),
        ("example.co", 443, "not in this group's allowlist"),
        ("example.com", 22, "port 22 is not allowed"),
        ("example.com", 8443, "port 8443 is not allowed"),
        ("93.184.216.34", 443, "is an IP address"),
        ("[2606:2800:220:1::]", 443, "is an IP address"),
        ("::1", 443, "is an IP address"),
        ("2130706433", 443, "is an IP address"),
        ("127.1", 443, "is an IP address"),
        ("0x7f.1", 443, "is an IP address"),
        ("exa mple.com", 443, "not a valid host name"),
        ("-x.example.com", 443, "not a valid host name"),
        ("bücher.example.com", 443, "not a valid host name"),
        ("", 443, "not a valid host name"),
    ],
)
def test_decision_table(host: str, port: int, refused_because: str | None) -> None:
    reason = allowed(host, port, DOMAINS)
    if refused_because is None:
        assert reason is None
    else:
        assert reason is not None and refused_because in reason


def test_empty_allowlist_refuses_everything() -> None:
    assert "allowlist is empty" in (allowed("example.com", 443, ()) or "")


def test_parse_domains_normalises_and_refuses_bad_entries() -> None:
    assert parse_domains(["Example.COM.", " api.github.com", "", "example.com"]) == (
        "example.com",
        "api.github.com",
    )
    for bad, why in [
        ("*.example.com", "no wildcards"),
        ("1.2.3.4", "not IP addresses"),
        ("[::1]", "not IP addresses"),
        ("exa_mple.com", "not a domain name"),
        ("http://example.com", "not a domain name"),
        ("example.com:443", "not a domain name"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_domains([bad])


def test_parse_request_connect_and_absolute_uri() -> None:
    req = parse_request(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert (req.method, req.host, req.port, req.head) == ("CONNECT", "example.com", 443, b"")
    req = parse_request(
        b"GET http://Example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: evil.org\r\n"
        b"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\n"
        b"Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nAccept: */*\r\n\r\n"
    )
    assert (req.host, req.port) == ("example.com", 8080)
    assert req.head == (
        b"GET /a/b?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n"
        b"Connection: close\r\n\r\n"
    )
    for head, why in [
        (b"GET /local HTTP/1.1\r\n\r\n", "absolute http:// URL"),
        (b"GET https://example.com/ HTTP/1.1\r\n\r\n", "use CONNECT"),
        (b"CONNECT example.com HTTP/1.1\r\n\r\n", "host:port"),
        (b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n", "bad port"),
        (b"GARBAGE\r\n\r\n", "malformed"),
        (b"GET http://example.com/ HTTP/2\r\n\r\n", "HTTP/1.x"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_request(head)


class Upstream:
    """A TCP server on 127.0.0.1: echoes after a CONNECT, answers HTTP to plain requests."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readuntil(b"\r\n")
            if first.startswith(b"GET "):
                self.heads.append(first + await reader.readuntil(b"\r\n\r\n"))
                body = b"hello from upstream\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(body), body)
                )
            else:
                writer.write(b"echo:" + first)
                while data := await reader.read(4096):
                    writer.write(data)
            await writer.drain()
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()


async def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream() as server:
        yield server


@pytest_asyncio.fixture
async def egress(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Path]:
    sock = tmp_path / "egress.sock"
    proxy = EgressProxy(
        ("allowed.test",), "run=test", ports={upstream.port}, resolve=loopback, max_tunnels=2
    )
    await proxy.start(sock)
    yield sock
    await proxy.stop()
    assert not sock.exists()


async def ask(
    sock: Path, request: bytes
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return head, reader, writer


async def test_connect_tunnels_to_an_allowed_domain(egress: Path, upstream: Upstream) -> None:
    target = f"sub.allowed.test:{upstream.port}"
    head, reader, writer = await ask(egress, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 200 ")
    writer.write(b"ping\r\nmore bytes")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(21), 10) == b"echo:ping\r\nmore bytes"
    writer.write_eof()  # half-close: the upstream sees EOF and finishes, so does the tunnel
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_plain_http_is_forwarded_with_its_own_host(egress: Path, upstream: Upstream) -> None:
    request = (
        f"GET http://allowed.test:{upstream.port}/x HTTP/1.1\r\nHost: other.org\r\n"
        "Proxy-Connection: keep-alive\r\n\r\n"
    )
    head, reader, writer = await ask(egress, request.encode())
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert await asyncio.wait_for(reader.read(), 10) == b"hello from upstream\n"
    writer.close()
    assert upstream.heads == [
        (
            f"GET /x HTTP/1.1\r\nHost: allowed.test:{upstream.port}\r\nConnection: close\r\n\r\n"
        ).encode()
    ]


@pytest.mark.parametrize(
    ("target", "status", "why"),
    [
        ("denied.test:{port}", b"403", b"denied.test is not in this group's allowlist"),
        ("allowed.test.evil.org:{port}", b"403", b"not in this group's allowlist"),
        ("127.0.0.1:{port}", b"403", b"is an IP address"),
        ("[::1]:{port}", b"403", b"is an IP address"),
        ("allowed.test:443", b"403", b"port 443 is not allowed"),
        ("allowed.test", b"400", b"CONNECT needs host:port"),
    ],
)
async def test_refusals_say_why(
    egress: Path, upstream: Upstream, target: str, status: bytes, why: bytes
) -> None:
    line = f"CONNECT {target.format(port=upstream.port)} HTTP/1.1\r\n\r\n"
    head, reader, writer = await ask(egress, line.encode())
    assert head.split(b" ")[1] == status
    body = await asyncio.wait_for(reader.read(), 10)
    assert body.startswith(b"nanoclaw egress: ") and why in body
    writer.close()


async def test_plain_http_to_a_refused_domain_never_reaches_it(
    egress: Path, upstream: Upstream
) -> None:
    request = f"GET http://denied.test:{upstream.port}/ HTTP/1.1\r\n\r\n".encode()
    head, _, writer = await ask(egress, request)
    assert head.startswith(b"HTTP/1.1 403 ")
    writer.close()
    assert upstream.heads == []


async def test_a_refused_request_with_a_body_still_reads_its_answer(egress: Path) -> None:
    body = b"x" * 65536  # never read by the proxy, yet the answer arrives
    request = b"POST http://denied.test/ HTTP/1.1\r\nContent-Length: 65536\r\n\r\n" + body
    head, reader, writer = await ask(egress, request)
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"port 80 is not allowed" in await asyncio.wait_for(reader.read(), 10)
    writer.close()


async def test_start_replaces_what_a_sandbox_left_at_the_name(tmp_path: Path) -> None:
    sock = tmp_path / "egress.sock"
    (sock / "inner").mkdir(parents=True)  # an agent may leave anything in its /ipc
    proxy = EgressProxy(("allowed.test",))
    await proxy.start(sock)
    try:
        head, _, writer = await ask(sock, b"CONNECT denied.test:443 HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403 ")
        writer.close()
    finally:
        await proxy.stop()


async def test_groups_set_domains_is_validated_and_stored(store: Store) -> None:
    group = apply_setting(Group(folder="work", name="work"), "network", "allowlist")
    group = apply_setting(group, "domains", "Example.COM, api.github.com,,example.com")
    assert group.domains == ("example.com", "api.github.com")
    with pytest.raises(ValueError, match="no wildcards"):
        apply_setting(group, "domains", "*.example.com")
    await store.save_group(group)
    stored = await store.group("work")
    assert stored is not None and stored.domains == ("example.com", "api.github.com")
    assert [g.domains for g in await store.groups() if g.folder == "work"] == [group.domains]
    await store.save_group(apply_setting(group, "domains", ""))
    cleared = await store.group("work")
    assert cleared is not None and cleared.domains == ()


async def test_tunnels_are_capped_and_stop_closes_them(
    tmp_path: Path, egress: Path, upstream: Upstream
) -> None:
    opened = []
    for _ in range(2):
        line = f"CONNECT allowed.test:{upstream.port} HTTP/1.1\r\n\r\n".encode()
        head, reader, writer = await ask(egress, line)
        assert head.startswith(b"HTTP/1.1 200 ")
        opened.append((reader, writer))
    head, reader, writer = await ask(egress, b"CONNECT allowed.test:1 HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    writer.close()
    opened[0][1].write_eof()  # the tunnel ends: upstream sees EOF, closes, the proxy follows
    assert await asyncio.wait_for(opened[0][0].read(), 10) == b""
    third = f"CONNECT allowed.test:{upstream.port} HTTP/1.1\r\n\r\n".encode()

    async def slot_free() -> bool:
        head, reader, writer = await ask(egress, third)
        if head.startswith(b"HTTP/1.1 200 "):
            opened.append((reader, writer))
            return True
        writer.close()
        return False

    await wait_for(slot_free, 10)

    other = tmp_path / "other.sock"
    proxy = EgressProxy(("allowed.test",), ports={upstream.port}, resolve=loopback)
    await proxy.start(other)
    head, reader, writer = await ask(other, third)
    assert head.startswith(b"HTTP/1.1 200 ")
    await proxy.stop()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the live tunnel was closed
    assert not other.exists()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("10.0.0.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("224.0.0.1", False),
        ("2606:4700::1111", True),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::1", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:93.184.215.14", True),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("::10.1.2.3", False),
        ("::93.184.215.14", True),
        ("::ffff:0:127.0.0.1", False),  # SIIT-translated
        ("64:ff9b::10.0.0.1", False),  # NAT64, RFC 6052 well-known prefix
        ("64:ff9b::127.0.0.1", False),
        ("64:ff9b::169.254.169.254", False),
        ("64:ff9b::93.184.215.14", True),
        ("64:ff9b:1::a00:1", False),  # NAT64 local use: never public
        ("64:ff9b:1::5db8:d70e", False),
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101:1::5", False),  # 6to4 of 192.168.1.1
        ("2002:5db8:d70e::1", True),  # 6to4 of 93.184.215.14
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo, client 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:a247:28f1", False),  # Teredo, client 93.184.215.14
    ],
)
def test_is_public_rechecks_the_ipv4_an_address_embeds(address: str, public: bool) -> None:
    assert is_public(address) is public


async def test_default_resolver_refuses_names_pointing_at_the_host(tmp_path: Path) -> None:
    assert await public_addresses("localhost", 80) == []
    sock = tmp_path / "egress.sock"
    proxy = EgressProxy(("localhost",), "run=test")
    await proxy.start(sock)
    try:
        head, reader, writer = await ask(sock, b"CONNECT localhost:443 HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403 ")
        assert b"localhost has no public address" in await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await proxy.stop()


async def test_relay_passes_tcp_connections_to_the_socket(
    tmp_path: Path, egress: Path, upstream: Upstream
) -> None:
    relay = await asyncio.start_server(partial(relay_one, sock=egress), "127.0.0.1", 0)
    missing = await asyncio.start_server(
        partial(relay_one, sock=tmp_path / "missing.sock"), "127.0.0.1", 0
    )
    try:
        port = relay.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT allowed.test:{upstream.port} HTTP/1.1\r\n\r\nhi\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.readexactly(9), 10) == b"echo:hi\r\n"
        writer.write_eof()  # ends the tunnel from end to end, so the relay's task finishes
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", missing.sockets[0].getsockname()[1]
        )
        # The answer arrives even when the client sent more than the relay ever reads.
        writer.write(b"CONNECT allowed.test:1 HTTP/1.1\r\n\r\n" + b"x" * 65536)
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 502 ")
        writer.close()
    finally:
        relay.close()
        missing.close()


def test_relay_reports_a_port_it_cannot_take(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        failure = start_relay(tmp_path / "egress.sock", taken.getsockname()[1])
    assert failure is not None and "address already in use" in failure.lower()


async def test_agent_in_sandbox_reaches_only_listed_domains(
    settings: Settings, store: Store, upstream: Upstream
) -> None:
    group = Group(folder="net", name="net", network="allowlist", domains=("allowed.test",))
    await store.save_group(group)
    port = upstream.port

    def factory(g: Group, label: str) -> EgressProxy:
        return EgressProxy(g.domains, label, ports={80, 443, port}, resolve=loopback)

    script = "; ".join(
        [
            "echo PROXY=$https_proxy",
            f"curl -sS --max-time 10 http://allowed.test:{port}/plain",
            f"curl -sS --max-time 10 --proxytunnel http://www.allowed.test:{port}/tunnel",
            f"curl -sS --max-time 10 http://denied.test:{port}/",
            f"curl -sS --max-time 10 --proxytunnel http://93.184.216.34:{port}/ 2>&1 | tail -c 80",
            f"curl -sS --max-time 10 http://93.184.216.34:{port}/",
            f"curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:{port}/ 2>&1 | tail -c 80",
            "(exec 3<>/dev/tcp/1.1.1.1/80) 2>&1 || echo DIRECT-FAILED",
            "echo DONE",
        ]
    )
    async with model_client(settings) as client:
        launcher = Launcher(
            store, settings.layout, agent_settings(settings), client, egress=factory
        )
        run_id = await store.start_run("net", "message", None, None)

        async def done(name: str) -> None:
            return None

        run = await launcher.launch(
            group, run_id, f"[[bash: {script}]]", done, RunOptions(idle_timeout_s=0.0)
        )
        outcome = await run.wait()
    assert outcome.ok, outcome
    assert not (settings.layout.sockets / "net" / "egress.sock").exists()  # served host-only
    assert (settings.layout.ipc / "net" / "egress.sock").stat().st_size == 0  # its mount point
    outbound = settings.layout.ipc / "net" / "outbound"
    texts = [json.loads(p.read_text())["text"] for p in sorted(outbound.glob("*.json"))]
    out = "\n".join(texts)
    assert "DONE" in out, out
    assert out.count("hello from upstream") == 2, out
    assert "denied.test is not in this group's allowlist" in out
    assert "CONNECT tunnel failed, response 403" in out, out
    assert "nanoclaw egress: 93.184.216.34 is an IP address" in out
    assert "Failed to connect to 127.0.0.1" in out or "Couldn't connect" in out
    assert "DIRECT-FAILED" in out
    assert "PROXY=http://127.0.0.1:3128" in out
    lines = sorted(head.split(b"\r\n")[:2] for head in upstream.heads)
    assert lines == [
        [b"GET /plain HTTP/1.1", f"Host: allowed.test:{port}".encode()],
        [b"GET /tunnel HTTP/1.1", f"Host: www.allowed.test:{port}".encode()],
    ]
