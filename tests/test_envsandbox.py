"""The sandbox of a group with a Nix environment (issue 16): the plan as a pure function, then
a real environment built from the stub package set (tests/nixpkgs), probed in real bwrap by
scripts, by a gate and by a live agent's bash tool: programs from /env, nothing else of the host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import make_home, settings_for
from fake_anthropic import FakeAnthropic
from probe import make_plan, plan_dir, run

from nanoclaw.agent.protocol import RunConfig
from nanoclaw.app import agent_settings, model_client
from nanoclaw.ipc import files as ipcfs
from nanoclaw.layout import Layout
from nanoclaw.models import Group
from nanoclaw.sandbox.gate import run_gate
from nanoclaw.sandbox.launcher import AGENT_CODE, Launcher, prepare_dirs
from nanoclaw.sandbox.plan import (
    ENV_LINKS,
    NixMount,
    SandboxPlan,
    bwrap_argv,
    nix_mount,
    write_etc,
)
from nanoclaw.sandbox.run import AgentRun
from nanoclaw.sandbox.runtime import (
    Runtime,
    detect_closure,
    detect_host,
    detect_runtime,
)
from nanoclaw.store.messages import Store

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3.11"
STORE = "/nix/store"
# The stub set's `bash` is a busybox link named bash, an applet Debian's busybox lacks: the
# env takes a bash that runs busybox's sh first (buildEnv keeps the first of a name).
ENV_EXPR = """
let
  p = import {repo}/tests/nixpkgs {{ }};
  bb = p.busybox;
  bash = builtins.derivation {{
    name = "bash-shim";
    system = builtins.currentSystem;
    builder = "${{bb}}/bin/busybox";
    args = [ "sh" "-euc" ''
      ${{bb}}/bin/mkdir -p $out/bin
      printf '#!${{bb}}/bin/sh\\nexec ${{bb}}/bin/sh "$@"\\n' > $out/bin/bash
      ${{bb}}/bin/chmod 555 $out/bin/bash
    '' ];
  }};
in
  {{ env = p.buildEnv {{ name = "e"; paths = [ bash p.bash p.coreutils p.jq ]; }}; other = p.gcc; }}
"""


@dataclass(frozen=True)
class BuiltEnv:
    mount: NixMount
    other: str  # a store path outside the env's closure


def nix_build(out: Path, attr: str) -> str:
    expr = ENV_EXPR.format(repo=REPO)
    argv = ["nix-build", "--no-out-link", "-E", expr, "-A", attr]
    path = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    built = path.stdout.strip()
    link = out / attr
    link.symlink_to(built)  # as the builder hands it over: an out-link, not the store path
    return str(link)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltEnv:
    if shutil.which("nix-build") is None:
        pytest.skip("nix-build is not installed: no Nix environment to mount")
    out = tmp_path_factory.mktemp("nixenv")
    other = nix_build(out, "other")
    env = nix_build(out, "env")
    closure = subprocess.run(
        ["nix-store", "--query", "--requisites", env], capture_output=True, text=True, check=True
    ).stdout.split()
    return BuiltEnv(nix_mount(env, closure), str(Path(other).resolve()))


@pytest.fixture(scope="session")
def system() -> Runtime:
    """The host's Debian interpreter, closure included (an ordinary user can reach it)."""
    if not Path(SYSTEM_PYTHON).is_file():
        pytest.skip(f"needs {SYSTEM_PYTHON}")
    runtime = Runtime(mounts=(), python=SYSTEM_PYTHON, masked=(), host=detect_host())
    return replace(runtime, closure=detect_closure(runtime))


@pytest.fixture(scope="session")
def daemon_runtime() -> Runtime:
    """The runtime the daemon detects (this venv's base interpreter), closure included."""
    runtime = detect_runtime()
    return replace(runtime, closure=detect_closure(runtime))


@pytest.fixture
def base() -> Iterator[Path]:
    with plan_dir() as path:
        yield path


def env_plan(base: Path, built: BuiltEnv, runtime: Runtime, mode: str = "root") -> SandboxPlan:
    return replace(make_plan(base, mode), runtime=runtime, nix=built.mount)


def test_closure_of_the_system_python(system: Runtime) -> None:
    """Found from the ELF files: the loader, libc, what _ssl and _sqlite3 load, the standard
    library and the tz database; the GUI stack of _tkinter and its site dirs not."""
    assert system.closure is not None
    inside = {dst for _, dst in system.closure.binds}
    assert {SYSTEM_PYTHON, "/usr/lib/python3.11", "/usr/share/zoneinfo", system.prlimit} <= inside
    names = {Path(dst).name for dst in inside}
    assert {"libc.so.6", "libssl.so.3", "libsqlite3.so.0", "libsmartcols.so.1"} <= names
    assert any(n.startswith("ld-linux") for n in names)
    assert not any(n.startswith(("libX11", "libtk", "libstdc++")) for n in names)
    assert not any("-packages" in dst for dst in inside)
    for src, dst in system.closure.binds:  # real files at the names the loader opens
        assert not Path(src).is_symlink() and Path(dst).resolve() == Path(src).resolve()


def test_a_runtime_program_in_the_store_comes_with_its_store_closure(built: BuiltEnv) -> None:
    """prlimit from /nix/store (a NixOS host): its store paths whole, no ELF walk inside."""
    bb = next(p for p in built.mount.closure if p.endswith("-busybox-stub"))
    runtime = Runtime((), SYSTEM_PYTHON, (), detect_host(), prlimit=f"{bb}/bin/busybox")
    closure = detect_closure(runtime)
    assert (bb, bb) in closure.binds
    inside = [dst for _, dst in closure.binds]
    assert not any(dst.startswith(f"{bb}/") for dst in inside)
    assert "/usr/bin/prlimit" not in inside
    assert not any(Path(dst).name.startswith("libsmartcols") for dst in inside)


def test_jq_comes_from_the_env_and_its_closure(
    base: Path, built: BuiltEnv, system: Runtime
) -> None:
    out = run(
        env_plan(base, built, system),
        'echo "PATH=$PATH"; jq .a; echo "JQ=$(readlink -f "$(command -v jq)")"; '
        'echo "SH=$(readlink /bin/sh) BASH=$(readlink /bin/bash) ENV=$(readlink /usr/bin/env)"; '
        "ls /proc/$$/fd | tr '\\n' ' '",
    )
    assert "PATH=/env/bin\n" in out
    assert "jq from jq-stub: .a" in out
    jq = out.split("JQ=", 1)[1].split()[0]
    assert jq.startswith(STORE + "/") and str(Path(*Path(jq).parts[:4])) in built.mount.closure
    assert "SH=/env/bin/sh BASH=/env/bin/bash ENV=/env/bin/env" in out
    assert out.strip().endswith("exit=0"), out


@pytest.mark.parametrize("mode", ["root", "user"])
def test_nothing_else_of_the_host_or_the_store(
    base: Path, built: BuiltEnv, system: Runtime, mode: str
) -> None:
    """Host programs, a host library no runtime file loads and a store path outside the
    closure are absent; /usr, /lib, /lib64, /bin, /sbin hold exactly the runtime's files
    and the links into /env; /nix/store exactly the closure."""
    assert system.closure is not None
    absent = [
        "/usr/bin/python3",
        "/usr/bin/gcc",
        "/bin/ls",
        "/usr/bin/ls",
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib/x86_64-linux-gnu/libX11.so.6",
        "/usr/lib/python3/dist-packages",
        built.other,
    ]
    dirs = sorted(dst for src, dst in system.closure.binds if Path(src).is_dir())
    prune = " -o ".join(f"-path {d}" for d in dirs)
    script = (
        f"for p in {' '.join(absent)}; do ls -d $p >/dev/null 2>&1 && echo PRESENT $p; done; "
        f"echo TREE; find /usr /lib /lib64 /bin /sbin \\( {prune} \\) -prune -print "
        "-o \\( -type f -o -type l \\) -print 2>/dev/null; echo STORE; ls /nix/store"
    )
    assert Path(built.other).is_dir()  # it exists on the host: absent inside by the plan
    out = run(env_plan(base, built, system, mode), script, mode)
    assert "PRESENT" not in out, out
    tree = set(out.split("TREE\n", 1)[1].split("STORE\n", 1)[0].split())
    expected = {dst for _, dst in system.closure.binds} | {link for link, _ in ENV_LINKS}
    assert tree == expected
    listed = set(out.split("STORE\n", 1)[1].split()[:-1])
    assert listed == {Path(p).name for p in built.mount.closure}


def test_system_python_runs_with_its_whole_standard_library(
    base: Path, built: BuiltEnv, system: Runtime
) -> None:
    code = (
        "import sys, ssl, sqlite3, ctypes, lzma, bz2, json, http.client, zoneinfo; "
        "print('TZ', zoneinfo.ZoneInfo('Europe/Paris')); "
        "print('SITE', [p for p in sys.path if 'packages' in p])"
    )
    out = run(env_plan(base, built, system), f'{SYSTEM_PYTHON} -I -S -c "{code}"')
    assert "TZ Europe/Paris" in out and "SITE []" in out, out


@pytest.mark.timeout(120)  # a write that blocks on a full pipe fails here, not hangs
def test_options_larger_than_a_pipe_still_start(
    base: Path, built: BuiltEnv, system: Runtime
) -> None:
    """A closure of thousands of store paths: bwrap's options (in an fd) pass 64 KiB."""
    many = replace(built.mount, closure=built.mount.closure * 400)
    plan = replace(env_plan(base, built, system), nix=many)
    assert len("\0".join(bwrap_argv(plan, ["/bin/true"]))) > 64 * 1024
    assert "jq from jq-stub: ok" in run(plan, "jq ok")


async def test_gate_runs_in_the_env(tmp_path: Path, built: BuiltEnv, system: Runtime) -> None:
    layout = Layout(tmp_path / "home")
    prepare_dirs(layout, "work")
    ipcfs.ensure_dirs(layout.ipc, "work")
    plan = SandboxPlan(
        workspace=layout.groups / "work",
        ipc=layout.ipc / "work",
        global_dir=layout.groups / "global",
        global_writable=False,
        skills=layout.skills,
        agent_code=AGENT_CODE,
        etc=write_etc(layout.sandbox_etc),
        runtime=system,
        nix=built.mount,
    )
    jq = '"$(readlink -f "$(command -v jq)")" "$(jq x)"'
    script = f"""printf '{{"wake": true, "data": "%s|%s"}}\\n' {jq}"""
    gate = await run_gate(plan, script)
    assert gate.wake, gate
    assert isinstance(gate.data, str)
    jq, said = gate.data.split("|")
    assert str(Path(*Path(jq).parts[:4])) in built.mount.closure
    assert said == "jq from jq-stub: x"


async def test_agent_starts_and_its_bash_tool_runs_jq(
    tmp_path: Path, built: BuiltEnv, daemon_runtime: Runtime
) -> None:
    """A real run with the daemon's runtime: the runner starts from the runtime's closure,
    reaches the fake model, and its bash tool (/bin/bash -c) runs jq from /env."""
    with FakeAnthropic() as fake:
        settings = settings_for(make_home(tmp_path / "home"), fake.base_url)
        store = await Store.open(settings.layout.db)
        try:
            group = Group(folder="nixy", name="nixy")
            await store.save_group(group)
            async with model_client(settings) as session:
                launcher = Launcher(
                    store, settings.layout, agent_settings(settings), session, daemon_runtime
                )
                run_id = await store.start_run("nixy", "message", None, None)
                plan = replace(await launcher.prepare(group), nix=built.mount)
                agent = agent_settings(settings)
                script = (
                    'echo "JQ=$(readlink -f "$(command -v jq)")"; jq hello; '
                    'echo "LDP=${LD_LIBRARY_PATH:-none}"; ls /usr/bin'
                )
                config = RunConfig(
                    model=agent.model,
                    prompt=f"[[bash: {script}]]",
                    assistant_name=agent.assistant_name,
                    tz="Europe/Paris",
                    is_main=False,
                    idle_timeout_s=0.0,
                )

                async def done(name: str) -> None:
                    return None

                run = AgentRun(
                    folder="nixy",
                    run_id=run_id,
                    plan=plan,
                    ipc_root=settings.layout.ipc,
                    config=config,
                    proxy=launcher.model_proxy(group, run_id),
                    timeout_s=120,
                    log_path=settings.layout.logs / "nixy" / "run.log",
                    on_turn_done=done,
                )
                await run.start()
                outcome = await run.wait()
        finally:
            await store.close()
        assert outcome.ok, (outcome, _log(settings.layout.logs / "nixy" / "run.log"))
        results = [
            block["content"]
            for r in fake.requests
            for m in r.body.get("messages", [])
            if isinstance(m.get("content"), list)
            for block in m["content"]
            if block.get("type") == "tool_result"
        ]
    out = json.dumps(results)
    assert "jq from jq-stub: hello" in out, out
    jq = out.split("JQ=", 1)[1].split("\\n")[0]
    assert str(Path(*Path(jq).parts[:4])) in built.mount.closure
    assert "python" not in out.split("jq from jq-stub: hello", 1)[1]  # no interpreter in /usr/bin
    if daemon_runtime.mounts:  # a relocated interpreter, found by its RUNPATH
        assert "LDP=none" in out


def _log(path: Path) -> str:
    return path.read_text()[-2000:] if path.exists() else ""
