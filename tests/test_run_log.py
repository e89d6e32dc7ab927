"""The per-run log (store/logs/<group>/run-N.log): the sandbox's stderr, and only if any.

Real runs in real sandboxes against the fake model: a quiet run leaves no file behind,
a run whose agent writes to stderr leaves exactly that.
"""

from __future__ import annotations

from pathlib import Path

from conftest import Running, settings_for, start_core, stop_core, wait_for
from fake_anthropic import FakeAnthropic, text_reply, tool_reply


async def test_only_a_run_that_wrote_to_stderr_has_a_log(home: Path, fake: FakeAnthropic) -> None:
    settings = settings_for(home, fake.base_url, AGENT_IDLE_TIMEOUT_S=1)
    running, task = await start_core(settings)
    try:
        await running.say("[[say: hi]]")
        await running.reply_containing("Andy: hi")
        await wait_for(lambda: _finished(running, 1), timeout=30)
        # the agent's own stderr, reached from a tool: the bash tool's parent is the agent
        fake.script(
            tool_reply("bash", {"command": "echo 'note from run 2' > /proc/$PPID/fd/2"}),
            text_reply("done"),
        )
        await running.say("write to stderr")
        await running.reply_containing("Andy: done")
        await wait_for(lambda: _finished(running, 2), timeout=30)
    finally:
        await stop_core(running, task)
    logs = settings.layout.logs / "main"
    assert sorted(p.name for p in logs.glob("run-*.log")) == ["run-2.log"]  # none for run 1
    assert "note from run 2" in (logs / "run-2.log").read_text()


async def _finished(running: Running, run_id: int) -> bool:
    runs = await running.store.runs("main")
    return any(r.id == run_id and r.status == "ok" for r in runs)
