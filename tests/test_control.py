"""The host's chat commands against a real core and a real sandbox: /stop mid-tool, /status
while a tool runs, /pause then /resume; who may command; the terminal's progress lines."""

from __future__ import annotations

from dataclasses import replace

from conftest import Running, line, wait_for
from fake_anthropic import FakeAnthropic
from test_scheduled import drop, finished_runs, soon

from channels.repl import CONTROL_BESIDE_DAEMON, TerminalChat
from nanoclaw.channel import Ingest, Welcome
from nanoclaw.commands import Command
from nanoclaw.models import Group, ModelCall, Usage
from nanoclaw.store.messages import Store


async def tool_running(running: Running, tool: str, folder: str = "main") -> None:
    async def seen() -> bool:
        return (await running.core.control.status(folder)).tool == tool

    await wait_for(seen, 60)


async def test_stop_mid_tool_kills_the_sandbox_and_the_batch_is_not_run_again(
    running: Running, fake: FakeAnthropic
) -> None:
    asked = await running.say("@Andy [[bash: sleep 60]]")
    await tool_running(running, "bash")
    assert "Running: sleep 60" in running.output  # printed as it happened
    live = running.core.orchestrator.live["main"]
    assert await running.core.ingest.message(line("/stop")) is None  # answered, not stored
    answer = await running.reply_containing("stopped after")
    assert "1 step," in answer and " tokens" in answer

    async def recorded() -> list[tuple[int, str]]:
        runs = await running.store.runs("main", limit=5)
        return [(r.id, r.status) for r in runs if r.status != "running"]

    assert await wait_for(recorded, 10) == [(live.run_id, "stopped")]
    assert await running.store.cursor("main") >= asked  # the batch counts as handled
    # The next message starts a run whose prompt holds it alone: the stopped one is not asked
    # again (the fake echoes its prompt's last message).
    await running.say("@Andy and now?")
    await running.reply_containing("and now?")
    last = fake.requests[-1].body["messages"][-1]["content"]
    assert "and now?" in str(last) and "sleep 60" not in str(last)
    assert len(fake.requests) == 2


async def test_status_while_a_tool_runs_names_it(running: Running) -> None:
    await running.say("@Andy [[bash: sleep 60]]")
    await tool_running(running, "bash")
    assert await running.core.ingest.message(line("/status")) is None
    out = await running.reply_containing("running bash: sleep 60")
    assert "an agent is working" in out and "step 1" in out
    assert await running.core.ingest.message(line("/stop")) is None
    await running.reply_containing("stopped after")


async def test_pause_holds_before_the_next_model_call_and_resume_goes_on(
    running: Running, fake: FakeAnthropic
) -> None:
    await running.say("@Andy [[bash: sleep 2; echo slept]]")
    await tool_running(running, "bash")
    assert await running.core.ingest.message(line("/pause")) is None
    await running.reply_containing("paused:")
    live = running.core.orchestrator.live["main"]
    assert live.run is not None
    run = live.run
    await wait_for(lambda: run.activity.held, 30)  # the agent waits, its tool done
    assert len(fake.requests) == 1  # and it did not call the model after the tool
    assert "(paused)" in (await running.core.control.answer("main", "status"))
    assert await running.core.ingest.message(line("/resume")) is None
    await running.reply_containing("RESULT: exit code 0")
    assert "slept" in running.output and len(fake.requests) == 2
    assert not run.activity.held
    # The tape holds the commands and the tool call with its exit code and duration.
    tape = await running.store.tape_recent(0, "main")
    kinds = [(e.kind, e.text) for e in tape if e.kind in ("command", "tool")]
    commands = [text.split(":")[0] for kind, text in kinds if kind == "command"]
    assert commands == ["/pause", "/status", "/resume"], kinds
    assert [kind for kind, _ in kinds].count("tool") == 1, kinds
    tool = next(e for e in tape if e.kind == "tool")
    assert "sleep 2" in tool.text and tool.run_id == run.run_id
    assert tool.detail is not None and tool.detail["exit"] == 0 and tool.detail["ms"] >= 1000


async def test_commands_from_others_are_ordinary_messages(running: Running) -> None:
    await running.add_group("team", "term:team", requires_trigger=True)
    stored = await running.core.ingest.message(line("/status", "term:team", "tg:99"))
    assert stored is not None  # not an allowed sender: a message like any other
    assert await running.core.ingest.message(line("/status", "term:team")) is None
    await running.reply_containing("no agent is working")
    unknown = await running.core.ingest.message(line("/stop@some_bot"))
    assert unknown is not None  # not this bot's: an ordinary message


async def test_repl_slash_commands_are_the_hosts(running: Running) -> None:
    core = running.core
    args = (running.store, core.ingest, running.channel, running.settings, "main")
    chat = TerminalChat(*args, control=core.control.answer)
    status = str(await chat.command("status", "")).splitlines()
    assert status[0] == "no agent is working" and status[-1] == "no task scheduled"
    assert status[1].startswith("budget left today: ")  # the settings' daily budget
    assert (await chat.command("pause", "")) == "nothing to pause: no agent is working here"
    beside = TerminalChat(*args)  # beside a daemon: this process runs no agent
    assert (await beside.command("stop", "")) == CONTROL_BESIDE_DAEMON.format("stop")
    # main's approvals: the local user answers them here too
    await running.add_group("family", "tg:-7", network="allowlist", domains=("ok.test",))
    chat = TerminalChat(*args, control=core.control.answer, approve=core.control.approve)
    saved = str(await chat.command("allow", "family more.test always"))
    assert "more.test" in saved and "allowlist" in saved, saved
    family = await running.store.group("family")
    assert family is not None and family.domains == ("ok.test", "more.test")
    assert "usage" in str(await chat.command("allow", "family"))
    assert (await beside.command("deny", "family x.test")) == CONTROL_BESIDE_DAEMON.format("deny")
    await chat.select("family")
    assert "main's" in str(await chat.command("deny", "family x.test"))


async def test_stop_ends_a_scheduled_run_too(running: Running) -> None:
    task_id = drop(
        running,
        "main",
        {"type": "schedule_task", "schedule": {"at": soon(0.5)}, "prompt": "[[bash: sleep 60]]"},
    )
    await tool_running(running, "bash")
    assert (await running.core.control.status("main")).task
    assert await running.core.ingest.message(line("/stop")) is None
    await running.reply_containing("stopped after")
    [run] = await wait_for(lambda: finished_runs(running, task_id), 10)
    assert run.status == "stopped"


async def test_telegram_form_counts_only_for_this_bot(store: Store) -> None:
    asked: list[tuple[str, str, int]] = []

    async def control(folder: str, command: Command, upto: int) -> str:
        asked.append((folder, command, upto))
        return f"answer to /{command}"

    await store.save_group(Group(folder="team", name="team", chats=("tg:-100",)))
    welcome = Welcome(allowed_senders=("tg:1",))
    names = {"tg": "andy_bot"}
    ingest = Ingest(store, welcome=welcome, control=control, usernames=lambda c: names.get(c, ""))
    earlier = await ingest.message(line("hello", "tg:-100", "tg:1"))
    assert earlier is not None
    assert await ingest.message(line("/status@Andy_Bot", "tg:-100", "tg:1")) is None
    assert asked == [("team", "status", earlier)]
    assert await store.pending_outbox("tg:-100") == 1  # the answer, queued like a reply
    assert await ingest.message(line("/stop@other_bot", "tg:-100", "tg:1")) is not None
    assert await ingest.message(line("/stop", "tg:-100", "tg:2")) is not None  # not allowed
    assert await ingest.message(line("/stop", "tg:-200", "tg:1")) is not None  # no group's
    assert len(asked) == 1


async def test_status_counts_the_groups_own_budget_in_money(running: Running) -> None:
    """/status gives what is left of the group's own limits: money from its priced calls."""
    main = await running.store.group("main")
    assert main is not None
    await running.store.save_group(replace(main, daily_cost=1.0, daily_tokens=0))
    # 100,000 output tokens of the default model (Sonnet 4.6: $15 per million) = $1.50
    call = ModelCall("anthropic", running.settings.nanoclaw_model)
    await running.store.add_model_call("main", None, call, Usage(output_tokens=100_000))
    answer = await running.core.control.answer("main", "status", 0)
    left = next(ln for ln in answer.splitlines() if ln.startswith("budget left today: "))
    assert left == "budget left today: $0.00, 500 requests", left
    await running.store.save_group(replace(main, daily_cost=None))
    answer = await running.core.control.answer("main", "status", 0)
    assert "$" not in answer and "tokens" in answer  # back to the settings: no money limit
