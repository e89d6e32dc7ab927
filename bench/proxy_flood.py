"""The model proxy under a body flood: resident memory of a daemon-like process while
sandboxes send half of large request bodies and stall (`python -m bench.proxy_flood`), and
while many runs receive large streamed answers at once (the answers pass, they are not held).

A child process serves run proxies as the daemon does (`Launcher.model_proxy`, one shared
launcher); the parent attacks their sockets and reads the child's VmRSS before and its peak
(VmHWM) after. Each connection's fate is seen from the attacker's side: "held" (the proxy
keeps it), or a broken pipe / reset (answered and closed without the body being read).
For the streamed answers the fake Anthropic server runs in the parent, so the child's memory
is the proxy's alone. A measurement, not a test: it prints a table and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fake_anthropic import FakeAnthropic, text_reply
from pydantic import SecretStr

from nanoclaw.layout import Layout
from nanoclaw.models import Group
from nanoclaw.proxy.upstream import upstream_client
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.store.messages import Store

MiB = 1024 * 1024
HOLD_S = 3.0  # how long the stalled bodies are held open before the peak is read
SCENARIOS = [  # name, proxies, connections per proxy, declared length, bytes sent
    ("12 x half of 32 MiB, one run", 1, 12, 32 * MiB, 16 * MiB),
    ("12 x half of 4 MiB, one run", 1, 12, 4 * MiB, 2 * MiB),
    ("5 runs x 12 x 3.9 of 4 MiB", 5, 12, 4 * MiB, 4 * MiB - 100_000),
]
STREAMS = [("20 runs x 1 MiB streamed answer", 20, MiB)]  # name, runs, answer size
READ_CHUNK = 16 * 1024
READ_PAUSE_S = 0.002  # the agent reads at its pace, slower than the loopback upstream
ASK = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


async def serve(root: Path, proxies: int, base_url: str) -> None:
    """The child: proxies of `proxies` runs of one group, until stdin closes."""
    logging.basicConfig(level=logging.ERROR)  # one refusal line per run is not the point here
    store = await Store.open(root / "store.db")
    settings = AgentSettings("Andy", "m", "UTC", 1, 1)
    async with upstream_client(SecretStr("k"), base_url) as client:
        launcher = Launcher(store, Layout(root / "home"), settings, client)
        started = []
        for i in range(proxies):
            run_id = await store.start_run("work", "message", None, None)
            proxy = launcher.model_proxy(Group("work", "work"), run_id)
            await proxy.start(root / f"llm{i}.sock")
            started.append(proxy)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
        for proxy in started:
            await proxy.stop()
    await store.close()


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def stall(sock: Path, length: int, sent: int) -> str:
    """Declare `length`, send `sent` bytes of it as far as the proxy takes them, hold."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
    except OSError as exc:
        return type(exc).__name__
    head = f"POST /v1/messages HTTP/1.1\r\nhost: p\r\ncontent-length: {length}\r\n\r\n"
    outcome = "held"
    try:
        writer.write(head.encode())
        chunk = b"a" * MiB
        for start in range(0, sent, MiB):
            writer.write(chunk[: min(MiB, sent - start)])
            await asyncio.wait_for(writer.drain(), HOLD_S)
    except TimeoutError:
        outcome = "held (proxy not reading)"
    except OSError as exc:
        outcome = type(exc).__name__
    try:
        answer = await asyncio.wait_for(reader.read(200), HOLD_S)
        outcome = answer.split(b"\r\n")[0].decode() or outcome
    except (TimeoutError, OSError):
        pass
    writer.close()
    return outcome


async def attack(root: Path, proxies: int, per: int, length: int, sent: int) -> list[str]:
    tasks = [stall(root / f"llm{i}.sock", length, sent) for i in range(proxies) for _ in range(per)]
    return list(await asyncio.gather(*tasks))


async def receive(sock: Path) -> str:
    """A streamed Messages call, read a slice at a time: the bytes of its answer."""
    body = json.dumps({**ASK, "stream": True}).encode()
    reader, writer = await asyncio.open_unix_connection(str(sock))
    head = f"POST /v1/messages HTTP/1.1\r\nhost: p\r\ncontent-length: {len(body)}\r\n"
    writer.write(head.encode() + b"connection: close\r\n\r\n" + body)
    size = 0
    try:
        while chunk := await asyncio.wait_for(reader.read(READ_CHUNK), 60):
            size += len(chunk)
            await asyncio.sleep(READ_PAUSE_S)
    finally:
        writer.close()
    return f"{size / MiB:.1f} MiB answer"


async def receive_all(root: Path, runs: int) -> list[str]:
    return list(await asyncio.gather(*(receive(root / f"llm{i}.sock") for i in range(runs))))


def measured(
    proxies: int, base_url: str, load: Callable[[Path], Coroutine[Any, Any, list[str]]]
) -> tuple[int, int, list[str]]:
    """The child's RSS before `load` runs against its sockets, its peak after, what came."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        serve_args = ["--serve", str(root), str(proxies), base_url]
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.proxy_flood", *serve_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            # The peak from here on, not start-up's (importing the SDK peaks above its rest).
            Path(f"/proc/{child.pid}/clear_refs").write_text("5")
            before = memory_kib(child.pid)["VmRSS"]
            outcomes = asyncio.run(load(root))
            peak = memory_kib(child.pid)["VmHWM"]
        finally:
            child.communicate("", timeout=30)
    return before, peak, outcomes


def scenario(name: str, proxies: int, per: int, length: int, sent: int) -> str:
    before, peak, outcomes = measured(
        proxies, "http://127.0.0.1:9", lambda root: attack(root, proxies, per, length, sent)
    )
    return row(name, before, peak, outcomes)


def streams(name: str, runs: int, size: int) -> str:
    with FakeAnthropic() as fake:
        fake.responder = lambda body: text_reply("x" * size)
        before, peak, outcomes = measured(runs, fake.base_url, lambda root: receive_all(root, runs))
    return row(name, before, peak, outcomes)


def row(name: str, before: int, peak: int, outcomes: list[str]) -> str:
    counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    answers = ", ".join(f"{n} x {o}" for o, n in counts.items())
    return (
        f"{name:30} RSS {before / 1024:6.1f} MiB -> peak {peak / 1024:6.1f} MiB "
        f"(+{(peak - before) / 1024:.1f})  {answers}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", nargs=3, metavar=("DIR", "N", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve[0]), int(args.serve[1]), args.serve[2]))
        return 0
    for flood in SCENARIOS:
        print(scenario(*flood), flush=True)
    for stream in STREAMS:
        print(streams(*stream), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
