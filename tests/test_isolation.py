"""The sandbox's promises (SPEC section 5), probed by the agent itself through its bash tool.

One live agent in a non-main group runs every probe as a follow-up; each probe's output
comes back through the whole pipeline as the model's "RESULT:" answer.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import SECRET_KEY, Running, make_home, settings_for, start_core, stop_core
from fake_anthropic import FakeAnthropic

pytestmark = pytest.mark.asyncio(loop_scope="module")
CHAT = "term:probe"


@pytest.fixture(scope="module")
def model() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe(
    tmp_path_factory: pytest.TempPathFactory, model: FakeAnthropic
) -> AsyncIterator[Running]:
    home = make_home(tmp_path_factory.mktemp("iso") / "home")
    (home / "groups" / "other").mkdir()
    (home / "groups" / "other" / "secret.txt").write_text("other-group-secret\n")
    settings = settings_for(home, model.base_url, AGENT_IDLE_TIMEOUT_S=300)
    running, task = await start_core(settings)
    await running.add_group("probe", CHAT, requires_trigger=False)
    await running.add_group("other", "term:other", requires_trigger=False)
    yield running
    await stop_core(running, task)


async def sh(running: Running, command: str) -> str:
    """Run `command` through the agent's bash tool; returns its output."""
    marker = os.urandom(4).hex()
    script = f"echo BEGIN-{marker}; {{ {command}; }} 2>&1; echo END-{marker}"
    await running.say(f"[[bash: {script}]]", chat=CHAT)
    text = await running.reply_containing(f"END-{marker}", timeout=90)
    return text[text.index(f"BEGIN-{marker}") + 15 : text.rindex(f"END-{marker}")]


async def test_runs_as_unprivileged_sandbox_user(probe: Running) -> None:
    out = await sh(probe, "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    assert out.split()[0] == "1000"
    assert re.search(r"CapEff:\s+0+\b", out)
    assert re.search(r"NoNewPrivs:\s+1", out)


async def test_cannot_read_shadow_or_host_home(probe: Running) -> None:
    host_home = os.path.expanduser("~")
    out = await sh(probe, f"cat /etc/shadow; ls -A /root; ls -A {host_home}; echo rc=$?")
    assert "root:" not in out
    assert "No such file" in out
    assert out.strip().endswith("rc=2")


async def test_cannot_see_store_env_project_or_other_groups(probe: Running) -> None:
    home = probe.settings.nanoclaw_home
    out = await sh(
        probe,
        f"ls {home}/store/nanoclaw.db {home}/.env {Path.cwd()}/pyproject.toml 2>&1; "
        "cat /workspace/../other/secret.txt 2>&1; "
        "find / -xdev \\( -name nanoclaw.db -o -name .env -o -name secret.txt \\) 2>/dev/null; "
        "grep -rl other-group-secret /workspace /ipc /tmp /global /skills 2>/dev/null; "
        "echo scanned",
    )
    assert "other-group-secret" not in out
    assert "nanoclaw.db\n" not in out.replace("No such file", "")
    assert out.count("No such file") >= 4
    assert out.strip().endswith("scanned")


async def test_api_key_is_nowhere_in_environment_or_proc(probe: Running) -> None:
    out = await sh(
        probe,
        "env; cat /proc/1/environ | tr '\\0' '\\n'; "
        "grep -ras 'sk-ant' /proc/[0-9]*/environ /proc/[0-9]*/cmdline; "
        "grep -rs 'sk-ant' /workspace /ipc /tmp /etc /global 2>/dev/null; echo checked",
    )
    assert SECRET_KEY not in out
    assert "ANTHROPIC_API_KEY" not in out
    assert out.strip().endswith("checked")


async def test_no_network_when_policy_is_off(probe: Running, model: FakeAnthropic) -> None:
    port = model.base_url.rsplit(":", 1)[1]
    out = await sh(
        probe,
        f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>&1 && echo CONNECTED-LOCAL; "
        "(exec 3<>/dev/tcp/1.1.1.1/53) 2>&1 && echo CONNECTED-REMOTE; "
        "ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1",
    )
    assert "CONNECTED" not in out
    interfaces = {
        line.strip() for line in out.splitlines() if line.strip() and " " not in line.strip()
    }
    assert "eth0" not in interfaces
    assert "refused" in out.lower() or "unreachable" in out.lower()


async def test_cannot_write_outside_workspace_ipc_tmp(probe: Running) -> None:
    targets = [
        "/x",
        "/usr/x",
        "/etc/x",
        "/runtime/x",
        "/runtime/lib/agent/x",
        "/skills/x",
        "/global/x",
        "/proc/x",
        "/ipc/errors/x",
    ]
    out = await sh(
        probe,
        "for t in " + " ".join(targets) + "; do touch $t 2>/dev/null && echo WROTE $t; done; "
        "touch /workspace/ok /ipc/ok /tmp/ok && echo allowed-ok; rm -f /workspace/ok /ipc/ok",
    )
    assert "WROTE" not in out
    assert "allowed-ok" in out


async def test_cannot_replace_model_socket_or_runner(probe: Running) -> None:
    out = await sh(
        probe,
        "rm -f /ipc/llm.sock; mv /ipc/llm.sock /ipc/x; test -S /ipc/llm.sock && echo SOCK; "
        "echo hack >> /runtime/lib/agent/__main__.py 2>&1; echo rc=$?",
    )
    assert "SOCK" in out
    assert "rc=1" in out


async def test_sees_no_host_process(probe: Running) -> None:
    out = await sh(
        probe,
        "ls /proc | grep -cE '^[0-9]+$'; cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo",
    )
    count = int(out.split()[0])
    assert count < 10
    assert "pytest" not in out and "nanoclaw.cli.main" not in out
    assert str(probe.settings.nanoclaw_home) not in out  # bwrap's argv is hidden in an fd


async def test_runner_has_the_standard_library_and_no_package(probe: Running) -> None:
    """The runner's interpreter, with the runner's own flags and with `site` on too: the
    standard library and the runner import, no installed package does, and nothing is
    inside any site-packages dir under /runtime (the interpreter's own are masked empty)."""
    code = (
        "import sys, importlib.util as u; sys.path.insert(0, '/runtime/lib'); "
        "import json, http.client, agent.model; print('STDLIB-OK'); "
        "print('PATHS', [p for p in sys.path if 'site-packages' in p]); "
        "print('FOUND', [m for m in ('anthropic', 'aiohttp', 'httpx', 'pydantic') "
        "if u.find_spec(m)])"
    )
    out = await sh(
        probe,
        'py=$(readlink /proc/$PPID/exe); echo "EXE $py"; '
        "tr '\\0' ' ' < /proc/$PPID/cmdline | cut -c1-60; echo; "
        f'"$py" -I -S -B -c "{code}"; "$py" -I -B -c "{code}"; '
        "echo FIND-BEGIN; find /runtime -path '*-packages/*' 2>/dev/null | head -3; echo FIND-DONE",
    )
    assert " -I -S -B -c " in out  # the runner's own flags, as checked by the first run
    assert out.count("STDLIB-OK") == 2
    assert "FOUND []" in out and "FOUND [" not in out.replace("FOUND []", "")
    assert "PATHS []" in out  # with -S: no site dir on sys.path at all
    assert out.split("FIND-BEGIN")[1].split("FIND-DONE")[0].strip() == ""  # nothing found
