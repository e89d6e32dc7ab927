"""One group's outbound flood against another group's reply: the IPC watcher's fairness.

Group `alpha` renames JUNK malformed files into its outbound dir, then group `beta` one
send_message; the clock stops when the IPC handler queues beta's reply (its `on_reply`).
The same reply with no flood is the floor. `python -m bench.flood [--reps N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.report import Figure, median, table
from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.handler import IpcHandler
from nanoclaw.ipc.watcher import IpcWatcher
from nanoclaw.models import Group
from nanoclaw.store.messages import Store

JUNK = 3000
STEP_TIMEOUT_S = 60.0
GROUPS = {"alpha": "tg:-1", "beta": "tg:-2"}


def _write(outbound: Path, data: bytes) -> float:
    """As the agent does: a hidden temporary name, then a rename to <ms>-<hex>.json; returns
    when the file became visible."""
    name = f"{int(time.time() * 1000):013d}-{secrets.token_hex(6)}.json"
    tmp = outbound / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, outbound / name)
    return time.perf_counter()


def _flood(outbound: Path, count: int) -> None:
    for _ in range(count):
        _write(outbound, b"{not json")


async def _replied(store: Store) -> list[str]:
    return [str(r[0]) for r in await store._all("SELECT folder FROM outbox ORDER BY id")]


async def _once(root: Path, junk: int) -> tuple[float, float]:
    """(ms until beta's reply is queued, ms until alpha's outbound is empty)."""
    store = await Store.open(root / "store" / "nanoclaw.db")
    replied: list[float] = []  # stamped where the handler queues a reply
    handler = IpcHandler(
        store,
        root / "ipc",
        root / "groups",
        ZoneInfo("UTC"),
        on_reply=lambda: replied.append(time.perf_counter()),
    )
    watcher = IpcWatcher(handler, store, root / "ipc")
    try:
        for folder, chat in GROUPS.items():
            await store.save_group(Group(folder=folder, name=folder, chats=(chat,)))
            ipcfs.ensure_dirs(root / "ipc", folder)
        task = asyncio.create_task(watcher.run())
        try:
            await asyncio.wait_for(watcher.ready.wait(), STEP_TIMEOUT_S)
            await asyncio.to_thread(_flood, root / "ipc" / "alpha" / "outbound", junk)
            body = b'{"type": "send_message", "text": "beta"}'
            t0 = await asyncio.to_thread(_write, root / "ipc" / "beta" / "outbound", body)
            deadline = time.monotonic() + STEP_TIMEOUT_S
            cleared = None
            while cleared is None or "beta" not in (folders := await _replied(store)):
                if time.monotonic() > deadline:
                    raise TimeoutError("no reply, or alpha's outbound never emptied")
                await asyncio.sleep(0.005)
                if cleared is None and not ipcfs.list_names(root / "ipc", "alpha"):
                    cleared = time.perf_counter()
            # on_reply fires once per outbox row, in row order (alpha may be told of its cap)
            return (replied[folders.index("beta")] - t0) * 1000, (cleared - t0) * 1000
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await store.close()


async def _measure(reps: int, junk: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
            out.append(await _once(Path(tmp), junk))
    return out


def flood(reps: int, junk: int = JUNK) -> list[Figure]:
    quiet = asyncio.run(_measure(reps, 0))
    loud = asyncio.run(_measure(reps, junk))
    floor = median([r for r, _ in quiet])
    value = median([r for r, _ in loud])
    return [
        Figure(
            "flood",
            f"reply of one group while another floods {junk:,} files",
            value,
            "ms",
            "-",
            None,
            floor=floor,
            ratio=value / floor if floor else None,
            extra={"n": reps, "alpha_cleared_ms": median([c for _, c in loud])},
            note="outbound rename -> reply queued; floor: the same reply with no flood",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--junk", type=int, default=JUNK)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # 3,000 set-aside warnings would be timed too
    print(table(flood(args.reps, args.junk)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
