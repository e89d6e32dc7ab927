"""Task gates: the verdict parsed as a pure function, and real scripts run in real bwrap."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import wait_for

from nanoclaw.ipc import files as ipcfs
from nanoclaw.layout import Layout
from nanoclaw.sandbox.gate import DATA_CAP, DECLINED, Gate, parse_gate_output, run_gate
from nanoclaw.sandbox.launcher import AGENT_CODE, prepare_dirs
from nanoclaw.sandbox.plan import SandboxPlan, write_etc
from nanoclaw.sandbox.runtime import detect_runtime

NOT_JSON = "last line is not JSON: "


@pytest.fixture
def plan(tmp_path: Path) -> SandboxPlan:
    """The plan of group `work` in a fresh home, built as the launcher builds it."""
    layout = Layout(tmp_path / "home")
    prepare_dirs(layout, "work")
    ipcfs.ensure_dirs(layout.ipc, "work")  # no llm.sock: no run has started yet
    return SandboxPlan(
        workspace=layout.groups / "work",
        ipc=layout.ipc / "work",
        global_dir=layout.groups / "global",
        global_writable=False,
        skills=layout.skills,
        agent_code=AGENT_CODE,
        etc=write_etc(layout.sandbox_etc),
        runtime=detect_runtime(),
    )


def processes_with_arg(arg: str) -> list[int]:
    """Host pids of every process with `arg` as one of its arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in args:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("stdout", "code", "expected"),
    [
        ('{"wake": true}', 0, Gate(True)),
        ('log\n\n{"wake": true, "data": [1, "a"]}\n  \n', 0, Gate(True, data=[1, "a"])),
        ('{"wake": true, "data": {"n": 3}}', 0, Gate(True, data={"n": 3})),
        ('{"wake": false, "data": 1}', 0, Gate(False, reason=DECLINED)),
        ('{"wake": true}\nlater', 0, Gate(False, reason="last line is not JSON: 'later'")),
        ('{"wake": true}', 2, Gate(False, reason="script exited with code 2")),
        ('{"wake": true}', -9, Gate(False, reason="script exited with code -9")),
        ("", 0, Gate(False, reason="script printed nothing")),
        (" \n\n", 0, Gate(False, reason="script printed nothing")),
        ("[true]", 0, Gate(False, reason="last line is not a JSON object")),
        ('"wake"', 0, Gate(False, reason="last line is not a JSON object")),
        ('{"wake": 1}', 0, Gate(False, reason='"wake" must be true or false, got 1')),
        ('{"wake": "true"}', 0, Gate(False, reason='"wake" must be true or false, got "true"')),
        ('{"data": 1}', 0, Gate(False, reason='"wake" must be true or false, got missing')),
        ('{"data": NaN}', 0, Gate(False, reason=NOT_JSON + "'{\"data\": NaN}'")),
        ("[" * 100_000, 0, Gate(False, reason=f"{NOT_JSON}'{'[' * 200}'")),  # deeper than recursion
    ],
)
def test_parse_gate_output(stdout: str, code: int, expected: Gate) -> None:
    assert parse_gate_output(stdout, code) == expected


def test_parse_caps_the_data() -> None:
    fits = "x" * (DATA_CAP - 2)  # the quotes make it exactly the cap
    assert parse_gate_output(json.dumps({"wake": True, "data": fits}), 0) == Gate(True, fits)
    gate = parse_gate_output(json.dumps({"wake": True, "data": fits + "x"}), 0)
    assert not gate.wake and gate.data is None
    assert gate.reason == f"data is {DATA_CAP + 1} bytes, over the {DATA_CAP} byte cap"


async def test_script_declines(plan: SandboxPlan) -> None:
    gate = await run_gate(plan, """echo '{"wake": false}'""")
    assert gate == Gate(False, reason=DECLINED)
    assert (plan.ipc / "llm.sock").exists()  # the placeholder bwrap needs for its bind


async def test_script_wakes_with_data_after_other_output(plan: SandboxPlan) -> None:
    script = """echo checking; echo '{"not": "last"}'; echo '{"wake": true, "data": {"n": 3}}'"""
    assert await run_gate(plan, script) == Gate(True, data={"n": 3})


@pytest.mark.parametrize(("flag", "wake"), [("go", True), ("stop", False)])
async def test_script_runs_in_the_group_folder(plan: SandboxPlan, flag: str, wake: bool) -> None:
    (plan.workspace / "flag").write_text(flag + "\n")
    script = """
        if [ "$(cat flag)" = go ]; then
            printf '{"wake": true, "data": {"cwd": "%s", "home": "%s"}}\\n' "$PWD" "$HOME"
        else
            echo '{"wake": false}'
        fi
    """
    gate = await run_gate(plan, script)
    assert gate.wake is wake
    if wake:
        assert gate.data == {"cwd": "/workspace", "home": "/workspace"}


async def test_last_line_not_json(plan: SandboxPlan) -> None:
    gate = await run_gate(plan, """echo '{"wake": true}'; echo done""")
    assert gate == Gate(False, reason="last line is not JSON: 'done'")


async def test_nonzero_exit_is_not_woken_and_keeps_the_stderr_tail(plan: SandboxPlan) -> None:
    script = """echo '{"wake": true}'; head -c 5000 /dev/zero | tr '\\0' e >&2
        echo oops >&2; exit 3"""
    gate = await run_gate(plan, script)
    assert not gate.wake
    assert gate.reason.startswith("script exited with code 3; stderr: ")
    tail = gate.reason.split("stderr: ", 1)[1]
    assert tail.endswith("oops") and len(tail) <= 2048


async def test_timeout_kills_the_whole_sandbox(plan: SandboxPlan) -> None:
    arg = f"30.{uuid.uuid4().int % 10**9}"
    gate = await asyncio.wait_for(run_gate(plan, f"sleep {arg}", timeout_s=1), 20)
    assert gate == Gate(False, reason="script timed out after 1s")
    await wait_for(lambda: not processes_with_arg(arg), 10)


async def test_cancellation_kills_the_sandbox_and_propagates(plan: SandboxPlan) -> None:
    arg = f"30.{uuid.uuid4().int % 10**9}"
    task = asyncio.create_task(run_gate(plan, f"sleep {arg}"))
    await wait_for(lambda: processes_with_arg(arg), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await wait_for(lambda: not processes_with_arg(arg), 10)


@pytest.mark.parametrize(
    "script",
    [
        """head -c 200000 /dev/zero | tr '\\0' x; echo; echo '{"wake": true}'""",
        """yes '{"wake": true}'""",  # never ends by itself: the cap must stop it
    ],
)
async def test_output_over_the_cap_is_refused(plan: SandboxPlan, script: str) -> None:
    gate = await asyncio.wait_for(run_gate(plan, script, timeout_s=30), 20)
    assert gate == Gate(False, reason=f"output larger than {64 * 1024} bytes")


async def test_output_at_the_cap_is_read(plan: SandboxPlan) -> None:
    filler = 64 * 1024 - len('{"wake": true}\n') - 1
    script = f"""head -c {filler} /dev/zero | tr '\\0' x; echo; echo '{{"wake": true}}'"""
    assert await run_gate(plan, script) == Gate(True)


async def test_host_files_outside_the_mounts_are_out_of_reach(
    plan: SandboxPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("host secret\n")
    monkeypatch.setenv("GATE_TEST_SECRET", "in-the-host-env")
    script = f"""
        seen=()
        cat {secret} >/dev/null 2>&1 && seen+=(file)
        [ -e {tmp_path} ] && seen+=(tmp_dir)
        [ -e /root ] && ls /root >/dev/null 2>&1 && seen+=(home)
        env | grep -q GATE_TEST_SECRET && seen+=(env)
        grep -qa GATE_TEST_SECRET /proc/1/environ 2>/dev/null && seen+=(bwrap_env)
        printf '{{"wake": true, "data": "%s"}}\\n' "${{seen[*]}}"
    """
    assert await run_gate(plan, script) == Gate(True, data="")


async def test_bwrap_failure_is_reported(plan: SandboxPlan) -> None:
    gate = await run_gate(replace(plan, workspace=plan.workspace / "missing"), "echo hi")
    assert not gate.wake
    assert gate.reason.startswith("script exited with code 1; stderr: bwrap: ")


async def test_unpreparable_sandbox_is_reported(plan: SandboxPlan, tmp_path: Path) -> None:
    gate = await run_gate(replace(plan, ipc=tmp_path / "no-ipc"), "echo hi")
    assert not gate.wake and gate.reason.startswith("cannot start the sandbox: ")
