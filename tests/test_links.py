"""No host-side file operation follows a link the agent planted where its sandbox can write.

Each test plants links (and directories, FIFOs) at the names the host uses in store/ipc/<g>/
and groups/<g>/, pointing at files standing for host paths, then runs the host's operation
and checks the host path was not created, read, written or chmodded.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from conftest import settings_for, wait_for
from fake_anthropic import FakeAnthropic

from nanoclaw.agent import protocol
from nanoclaw.app import agent_settings, model_client
from nanoclaw.config import Settings
from nanoclaw.ipc import files as ipcfs
from nanoclaw.models import Group
from nanoclaw.sandbox.launcher import Launcher, RunOptions
from nanoclaw.sandbox.plan import bwrap_argv
from nanoclaw.schedule.taskfile import TaskFile
from nanoclaw.store.messages import Store

HOST_TEXT = "# Cron: host secret line\n"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory standing for the host: a file to protect, and a name never to create."""
    path = tmp_path / "host"
    path.mkdir()
    (path / "file").write_text(HOST_TEXT)
    os.chmod(path / "file", 0o644)
    return path


def untouched(host: Path) -> bool:
    st = (host / "file").stat()
    return (
        sorted(p.name for p in host.iterdir()) == ["file"]
        and (host / "file").read_text() == HOST_TEXT
        and stat.S_IMODE(st.st_mode) == 0o644
    )


def plant(path: Path, kind: str, host: Path) -> None:
    if kind == "link-to-file":
        path.symlink_to(host / "file")
    elif kind == "dangling-link":
        path.symlink_to(host / "created")
    elif kind == "link-to-dir":
        path.symlink_to(host)
    elif kind == "dir":
        path.mkdir()
        (path / "inner").write_text("agent's")
    elif kind == "fifo":
        os.mkfifo(path)


KINDS = ["link-to-file", "dangling-link", "link-to-dir", "dir", "fifo"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sub", ipcfs.SUBDIRS)
def test_ensure_dirs_replaces_what_was_planted(
    tmp_path: Path, host: Path, sub: str, kind: str
) -> None:
    root = tmp_path / "ipc"
    (root / "g").mkdir(parents=True)
    plant(root / "g" / sub, kind, host)
    ipcfs.ensure_dirs(root, "g")
    for name in ipcfs.SUBDIRS:
        assert stat.S_ISDIR(os.lstat(root / "g" / name).st_mode)  # made, or the agent's own
    assert untouched(host)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("sub", "name", "write"),
    [
        ("input", "_close", lambda root: ipcfs.signal_close(root, "g")),
        ("input", "1-x.json", lambda root: ipcfs.write_input(root, "g", "1-x.json", {"p": 1})),
        ("", protocol.TASKS_FILE, lambda root: ipcfs.write_tasks(root, "g", {"tasks": []})),
    ],
)
def test_host_writes_replace_what_was_planted(
    tmp_path: Path, host: Path, kind: str, sub: str, name: str, write: Callable[[Path], None]
) -> None:
    root = tmp_path / "ipc"
    ipcfs.ensure_dirs(root, "g")
    target = root / "g" / sub / name
    plant(target, kind, host)
    write(root)
    assert stat.S_ISREG(os.lstat(target).st_mode)
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert untouched(host)


@pytest.mark.parametrize("kind", KINDS)
def test_clear_input_removes_links_without_following(tmp_path: Path, host: Path, kind: str) -> None:
    root = tmp_path / "ipc"
    ipcfs.ensure_dirs(root, "g")
    plant(root / "g" / "input" / "planted", kind, host)
    ipcfs.clear_input(root, "g")
    assert list((root / "g" / "input").iterdir()) == []
    assert untouched(host)


@pytest.mark.parametrize("kind", KINDS)
def test_mount_points_are_fresh_files_and_sockets_host_only(
    tmp_path: Path, host: Path, kind: str
) -> None:
    """bwrap would create a missing mount point through a link: each is made a plain file."""
    root, sockets = tmp_path / "ipc", tmp_path / "sockets" / "g"
    ipcfs.ensure_dirs(root, "g")
    for name in ipcfs.SOCKETS:
        plant(root / "g" / name, kind, host)
    ipcfs.prepare_mounts(root / "g", sockets)
    for name in ipcfs.SOCKETS:
        st = os.lstat(root / "g" / name)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
    assert (sockets / protocol.LLM_SOCK).exists()
    assert untouched(host)


@pytest_asyncio.fixture
async def launcher(settings: Settings, store: Store) -> AsyncIterator[Launcher]:
    async with model_client(settings) as client:
        yield Launcher(store, settings.layout, agent_settings(settings), client)


@pytest.mark.parametrize("network", ["off", "allowlist"])
async def test_sockets_are_bound_from_outside_the_agents_directories(
    launcher: Launcher, settings: Settings, network: str
) -> None:
    group = Group(folder="g", name="g", network=network)  # type: ignore[arg-type]
    argv = bwrap_argv(launcher.plan(group), ["true"])
    binds = {argv[i + 2]: argv[i + 1] for i, a in enumerate(argv) if a.startswith("--ro-bind")}
    wanted = ["/ipc/llm.sock"] + (["/ipc/egress.sock"] if network == "allowlist" else [])
    for inside in wanted:
        assert Path(binds[inside]).parent == settings.layout.sockets / "g"
    sources = [Path(src) for inside, src in binds.items() if inside.startswith("/ipc/")]
    assert sources and not any(src.is_relative_to(settings.layout.ipc) for src in sources)


async def test_claude_md_linked_to_a_host_file_is_not_read(
    settings: Settings, store: Store, host: Path
) -> None:
    """Problem lines of CLAUDE.md are shown to the agent: a link must not leak a host file."""
    await store.save_group(Group(folder="g", name="g"))
    (settings.layout.groups / "g").mkdir(parents=True)
    (settings.layout.groups / "g" / "CLAUDE.md").symlink_to(host / "file")
    taskfile = TaskFile(store, settings.layout.groups, ZoneInfo("UTC"), lambda folder: None)
    problems = await taskfile.sync("g")
    assert len(problems) == 1 and problems[0][1].startswith("CLAUDE.md unreadable: ")
    assert "host secret" not in str(problems)
    assert untouched(host)


async def test_closing_a_run_does_not_follow_a_planted_close_link(
    home: Path, fake: FakeAnthropic, store: Store, host: Path
) -> None:
    """The real path: the agent plants input/_close -> a host path, then the host closes it.

    The agent's turn lasts until the link is gone (the host's close replaces it), so the
    close lands on the planted link and not after the agent removed it itself.
    """
    settings = settings_for(home, fake.base_url, AGENT_IDLE_TIMEOUT_S=600, AGENT_TIMEOUT_S=60)
    group = Group(folder="main", name="main", chats=("term:main",), requires_trigger=False)
    await store.save_group(group)
    close = settings.layout.ipc / "main" / "input" / "_close"
    script = (
        f"ln -s {host / 'created'} /ipc/input/_close; "
        "for i in $(seq 400); do test -L /ipc/input/_close || break; sleep 0.05; done"
    )

    async def done(name: str) -> None:
        return None

    async with model_client(settings) as client:
        launcher = Launcher(store, settings.layout, agent_settings(settings), client)
        run_id = await store.start_run("main", "message", None, None)
        run = await launcher.launch(
            group, run_id, f"[[bash: {script}]]", done, RunOptions(idle_timeout_s=600)
        )
        waiting = asyncio.create_task(run.wait())  # reads the run's events
        await wait_for(close.is_symlink, timeout=30)
        run.close()
        outcome = await asyncio.wait_for(waiting, 50)
    assert outcome.ok, outcome  # asked to close, it closed: not killed at its timeout
    assert untouched(host)
