"""Approvals for blocked hosts: the pure parts, then a real egress proxy on a unix socket whose
unlisted hosts wait for main's `/allow` or `/deny` (answered through the real Ingest and
Control, saved in a real store), and the daemon's wiring into main's chat.

Upstream servers live on 127.0.0.1, reached through the loopback resolver of test_egress.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from conftest import Running, line, wait_for
from test_egress import Upstream, ask, loopback

from nanoclaw.approvals import Approvals, covers, question_text
from nanoclaw.channel import Ingest, Welcome
from nanoclaw.commands import Approval, Command, parse_approval, parse_command
from nanoclaw.control import Control
from nanoclaw.models import Group
from nanoclaw.proxy.budget import Budget
from nanoclaw.sandbox.egress import EgressProxy, offerable
from nanoclaw.store.messages import Store

FAMILY = Group(
    folder="family", name="family", chats=("tg:-100",), network="allowlist", domains=("ok.test",)
)


@pytest.mark.parametrize(
    ("text", "approval"),
    [
        ("/allow family api.example.org", Approval("once", "family", "api.example.org")),
        ("/allow family API.example.org once", Approval("once", "family", "api.example.org")),
        ("/ALLOW family x.org Always ", Approval("always", "family", "x.org")),
        ("/deny family x.org", Approval("deny", "family", "x.org")),
        ("/allow@andy_bot family x.org", Approval("once", "family", "x.org")),
        ("/allow@other_bot family x.org", None),
        ("/deny family x.org always", None),
        ("/allow family x.org forever", None),
        ("/allow family", None),
        ("/allow", None),
        ("please /allow family x.org", None),
    ],
)
def test_parse_approval(text: str, approval: Approval | None) -> None:
    assert parse_approval(text, "andy_bot") == approval
    assert parse_command(text, "andy_bot") is None  # never read as one of the bare commands


@pytest.mark.parametrize(
    ("host", "port", "offered"),
    [
        ("api.example.org", 443, True),
        ("API.Example.org.", 80, True),
        ("api.example.org", 22, False),
        ("10.1.2.3", 443, False),
        ("192.168.1.1", 443, False),
        ("[::1]", 443, False),
        ("2130706433", 443, False),
        ("localhost", 443, False),
        ("db.localhost", 443, False),
        ("printer.local", 443, False),
        ("metadata.google.internal", 443, False),
        ("nas", 443, False),
        ("bad_name.org", 443, False),
    ],
)
def test_offerable(host: str, port: int, offered: bool) -> None:
    assert offerable(host, port) is offered


def test_covers_and_the_question() -> None:
    assert covers("example.org", "api.example.org") and covers("x.org", "x.org")
    assert not covers("example.org", "notexample.org")
    assert question_text("family", "api.example.org", 443) == (
        "family wants api.example.org:443 — /allow family api.example.org [once|always] "
        "or /deny family api.example.org"
    )


@dataclass
class Desk:
    """Main's side: the questions posted to it, and the Ingest its chat writes into."""

    running: Running
    store: Store
    approvals: Approvals
    ingest: Ingest
    upstream: Upstream
    sock: Path
    posted: list[str] = field(default_factory=list)
    proxies: list[EgressProxy] = field(default_factory=list)

    async def run(self, group: Group | None = None) -> Path:
        """A new run's proxy for the group as stored now; its socket."""
        group = group or await self.store.group("family")
        assert group is not None
        proxy = self.approvals.egress(group, f"run={len(self.proxies) + 1}")
        sock = self.sock.with_name(f"egress{len(self.proxies)}.sock")
        await proxy.start(sock)
        self.proxies.append(proxy)
        return sock

    async def say(self, text: str, chat: str = "term:main") -> int | None:
        return await self.ingest.message(line(text, chat))

    def connect(self, sock: Path, host: str) -> asyncio.Task[bytes]:
        async def go() -> bytes:
            request = f"CONNECT {host}:{self.upstream.port} HTTP/1.1\r\n\r\n".encode()
            head, reader, writer = await ask(sock, request)
            if head.startswith(b"HTTP/1.1 200 "):
                writer.write(b"ping\r\n")
                head += await asyncio.wait_for(reader.readexactly(11), 10)
            else:
                head += await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return head

        return asyncio.create_task(go())

    async def asked(self, count: int) -> None:
        await wait_for(lambda: len(self.posted) >= count, 10)


def make_desk(running: Running, upstream: Upstream, timeout_s: float) -> Desk:
    posted: list[str] = []

    async def post(text: str) -> None:
        posted.append(text)

    store = running.store
    approvals = Approvals(post, store, timeout_s=timeout_s, ports={upstream.port}, resolve=loopback)
    control = Control(
        store,
        running.core.orchestrator,
        budget=Budget(),
        zone=ZoneInfo("UTC"),
        approvals=approvals,
    )

    async def command(folder: str, command: Command, upto: int) -> str:
        return await control.answer(folder, command, upto)

    ingest = Ingest(
        store,
        welcome=Welcome(allowed_senders=("tg:1",)),
        control=command,
        approve=control.approve,
    )
    sock = running.settings.layout.sockets / "approvals" / "egress.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    return Desk(running, store, approvals, ingest, upstream, sock, posted)


@pytest_asyncio.fixture
async def desk(running: Running) -> AsyncIterator[Desk]:
    async with Upstream() as upstream:
        await running.store.save_group(FAMILY)
        d = make_desk(running, upstream, timeout_s=60.0)
        try:
            yield d
        finally:
            for proxy in d.proxies:
                await proxy.stop()


async def test_allow_once_lets_the_waiting_connections_through(desk: Desk) -> None:
    sock = await desk.run()
    first = desk.connect(sock, "api.unlisted.test")
    await desk.asked(1)
    second = desk.connect(sock, "api.unlisted.test")  # the same host joins the same question
    await wait_for(lambda: desk.approvals.pending("family") == ["api.unlisted.test"], 10)
    assert not first.done()  # nothing is allowed without an answer
    answer = await desk.say("/allow family api.unlisted.test")
    assert answer is None  # answered by the host, not stored
    for task in (first, second):
        assert (await asyncio.wait_for(task, 10)).startswith(b"HTTP/1.1 200 ")
    assert desk.posted == [question_text("family", "api.unlisted.test", desk.upstream.port)]
    group = await desk.store.group("family")
    assert group is not None and group.domains == ("ok.test",)  # once: not saved
    third = desk.connect(sock, "api.unlisted.test")  # once was for the waiting ones only
    await desk.asked(2)
    await desk.say("/deny family api.unlisted.test")
    assert b"denied by the admin" in await asyncio.wait_for(third, 10)
    tape = await desk.store.tape_recent(0, folder="family")
    texts = [e.text for e in tape]
    assert any(t.startswith("asked main: family wants api.unlisted.test") for t in texts)
    assert any("/allow family api.unlisted.test once: the waiting connection" in t for t in texts)


async def test_deny_refuses_and_is_remembered_for_the_run(desk: Desk) -> None:
    sock = await desk.run()
    waiting = desk.connect(sock, "evil.test")
    await desk.asked(1)
    await desk.say("/deny family evil.test")
    head = await asyncio.wait_for(waiting, 10)
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"evil.test was denied by the admin" in head
    assert b"not in this group's allowlist" in head
    again = await asyncio.wait_for(desk.connect(sock, "www.evil.test"), 10)  # subdomain too
    assert again.startswith(b"HTTP/1.1 403 ") and b"denied by the admin" in again
    assert len(desk.posted) == 1 and desk.approvals.pending("family") == []
    assert desk.upstream.heads == []


async def test_always_saves_the_domain_and_later_connections_pass(desk: Desk) -> None:
    sock = await desk.run()
    waiting = desk.connect(sock, "api.more.test")
    await desk.asked(1)
    await desk.say("/allow family more.test always")  # a parent domain answers it too
    assert (await asyncio.wait_for(waiting, 10)).startswith(b"HTTP/1.1 200 ")
    await desk.running.reply_containing(
        "more.test is now in family's allowlist (ok.test, more.test); the waiting connection"
    )
    group = await desk.store.group("family")
    assert group is not None and group.domains == ("ok.test", "more.test")
    later = await asyncio.wait_for(desk.connect(sock, "cdn.more.test"), 10)  # same run
    assert later.startswith(b"HTTP/1.1 200 ")
    next_run = await desk.run()  # the next run reads the saved list
    assert (await asyncio.wait_for(desk.connect(next_run, "more.test"), 10)).startswith(
        b"HTTP/1.1 200 "
    )
    assert len(desk.posted) == 1


async def test_no_answer_refuses_as_today_and_is_not_asked_again(running: Running) -> None:
    async with Upstream() as upstream:
        await running.store.save_group(FAMILY)
        d = make_desk(running, upstream, timeout_s=0.5)
        sock = await d.run()
        try:
            head = await asyncio.wait_for(d.connect(sock, "slow.test"), 10)
            assert head.startswith(b"HTTP/1.1 403 ")
            assert b"no answer from the admin within 0.5 s" in head
            assert b"slow.test is not in this group's allowlist" in head
            again = await asyncio.wait_for(d.connect(sock, "slow.test"), 10)
            assert again.startswith(b"HTTP/1.1 403 ") and b"no answer" in again
            assert len(d.posted) == 1  # asked once
            assert await d.say("/allow family slow.test") is None
            await running.reply_containing("nothing of family waits for slow.test now")
        finally:
            for proxy in d.proxies:
                await proxy.stop()


@pytest.mark.parametrize("host", ["10.1.2.3", "[::1]", "localhost", "printer.local", "nas"])
async def test_ip_literals_and_local_names_are_never_offered(desk: Desk, host: str) -> None:
    sock = await desk.run()
    head = await asyncio.wait_for(desk.connect(sock, host), 10)
    assert head.startswith(b"HTTP/1.1 403 ")
    assert desk.posted == [] and desk.approvals.pending("family") == []


async def test_approvals_are_mains_and_from_allowed_senders(desk: Desk) -> None:
    sock = await desk.run()
    waiting = desk.connect(sock, "api.unlisted.test")
    await desk.asked(1)
    # In the group's own chat, even from an allowed sender, it is an ordinary message.
    assert await desk.ingest.message(line("/allow family api.unlisted.test", "tg:-100", "tg:1"))
    # In main's chat from someone not allowed: the same.
    assert await desk.ingest.message(line("/allow family api.unlisted.test", "term:main", "x:9"))
    assert desk.approvals.pending("family") == ["api.unlisted.test"] and not waiting.done()
    assert await desk.say("/allow nobody api.unlisted.test") is None
    await desk.running.reply_containing("there is no group 'nobody'")
    assert await desk.say("/allow family 10.0.0.1") is None
    await desk.running.reply_containing("list domain names, not IP addresses")
    assert desk.approvals.pending("family") == ["api.unlisted.test"] and not waiting.done()
    await desk.say("/deny family api.unlisted.test")
    assert (await asyncio.wait_for(waiting, 10)).startswith(b"HTTP/1.1 403 ")


async def test_the_daemon_asks_in_mains_chat(running: Running) -> None:
    """The core's own approvals: the question reaches main's chat (the terminal here)."""
    await running.store.save_group(FAMILY)
    await running.say("hello")  # main's chat has spoken: the question goes there
    group = await running.store.group("family")
    assert group is not None
    proxy = running.core.approvals.egress(group, "run=1")
    sock = running.settings.layout.sockets / "family-egress.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    await proxy.start(sock)
    try:
        request = b"CONNECT api.unlisted.example.org:443 HTTP/1.1\r\n\r\n"
        task = asyncio.create_task(ask(sock, request))
        await running.reply_containing("family wants api.unlisted.example.org:443")
        assert await running.core.ingest.message(line("/deny family unlisted.example.org")) is None
        head, reader, writer = await asyncio.wait_for(task, 10)
        assert head.startswith(b"HTTP/1.1 403 ")
        assert b"denied by the admin" in await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await running.reply_containing("denied unlisted.example.org for family")
    finally:
        await proxy.stop()
