"""The light commands import light: `--help` and the store-only commands never load the
daemon's pieces (aiohttp, the SDKs, the launcher), which made each one take over a second.

The modules are read from `python -X importtime`, so no timing is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

HEAVY = {
    "aiohttp",
    "anthropic",
    "aiogram",
    "slixmpp",
    "nio",
    "nanoclaw.app",
    "nanoclaw.sandbox.launcher",
}


def imported(home: Path, *args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nanoclaw.cli.main", *args],
        env=cli_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}  # [0] is the header


@pytest.mark.parametrize(
    "args", [["--help"], ["groups", "list"], ["chats"], ["tasks", "list"], ["usage"]]
)
def test_light_commands_leave_the_daemon_unimported(tmp_path: Path, args: list[str]) -> None:
    modules = imported(tmp_path, *args)
    assert {"nanoclaw.config", "nanoclaw.store.messages"} <= modules  # the probe sees the command's
    assert modules & HEAVY == set()
