"""`nanoclaw doctor`: every check runs for real and a failure says how to fix it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import cli_env, settings_for
from fake_anthropic import FakeAnthropic
from fake_telegram import FakeTelegram
from nixhome import STUB, need_nix

from nanoclaw.cli.doctor import check_nix, check_seccomp
from nanoclaw.models import Group
from nanoclaw.store.messages import Store


def doctor(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", "doctor"],
        cwd=home,
        env=cli_env(home, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def cgroup_lines_allowed() -> set[str]:
    """Root needs a cgroup per run (RLIMIT_NPROC spares uid 0); an ordinary user has one
    only where the hierarchy is delegated to it, and otherwise the rlimits bind it."""
    per_run = "ok    a cgroup per run caps its processes and memory"
    if os.geteuid() == 0:
        return {per_run}
    return {per_run, "ok    no cgroup for runs: RLIMIT_NPROC and RLIMIT_AS bind an ordinary user"}


def test_doctor_passes_with_credential(tmp_path: Path, fake: FakeAnthropic) -> None:
    fake.api_key = "sk-ant-x"
    with FakeTelegram() as tg:
        proc = doctor(
            tmp_path,
            ANTHROPIC_API_KEY="sk-ant-x",
            ANTHROPIC_BASE_URL=fake.base_url,
            TELEGRAM_BOT_TOKEN=tg.token,
            TELEGRAM_API_URL=tg.base_url,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok    the model endpoint {fake.base_url} accepts the key" in proc.stdout
    assert "ok    Telegram bot @andy_bot" in proc.stdout
    assert [r.path for r in fake.requests] == ["/v1/messages/count_tokens"]
    assert "ok    user, pid and network namespaces work" in proc.stdout
    assert "starts in the sandbox" in proc.stdout
    assert [line for line in proc.stdout.splitlines() if "cgroup" in line] in (
        [[line] for line in cgroup_lines_allowed()]
    )
    assert re.search(r"ok    seccomp filter active in every sandbox \(\d+ rules\)", proc.stdout)
    assert "FAIL" not in proc.stdout


def test_doctor_names_the_fix_for_a_missing_key(tmp_path: Path) -> None:
    proc = doctor(tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    fail = next(i for i, line in enumerate(lines) if line.startswith("FAIL"))
    assert "ANTHROPIC_API_KEY" in lines[fail]
    assert lines[fail + 1].strip().startswith("fix: add ANTHROPIC_API_KEY=")


def test_doctor_names_the_fix_when_libseccomp_is_missing(tmp_path: Path) -> None:
    check = check_seccomp(settings_for(tmp_path, "http://127.0.0.1:9"), "libseccomp-gone.so.2")
    assert not check.ok
    assert "no sandbox may start" in check.what and "libseccomp-gone.so.2" in check.what
    assert check.fix.startswith("sudo apt-get install -y libseccomp2")


def test_doctor_says_which_credential_is_refused(tmp_path: Path, fake: FakeAnthropic) -> None:
    """A key or token the server refuses is a failure naming it, not "ok" (it was, before)."""
    fake.api_key = "sk-ant-the-right-one"
    with FakeTelegram() as tg:
        proc = doctor(
            tmp_path,
            ANTHROPIC_API_KEY="sk-ant-wrong-5e1",
            ANTHROPIC_BASE_URL=fake.base_url,
            TELEGRAM_BOT_TOKEN="123:wrong-token-0c4",
            TELEGRAM_API_URL=tg.base_url,
        )
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    model = lines.index(next(line for line in lines if "refused the key" in line))
    assert lines[model].startswith("FAIL") and "authentication_error" in lines[model]
    assert "check ANTHROPIC_API_KEY" in lines[model + 1]
    bot = lines.index(next(line for line in lines if "Telegram refused" in line))
    assert lines[bot].startswith("FAIL") and "TELEGRAM_BOT_TOKEN" in lines[bot + 1]
    assert "wrong-5e1" not in proc.stdout + proc.stderr
    assert "wrong-token-0c4" not in proc.stdout + proc.stderr


async def test_doctor_says_nix_is_missing_and_how_to_install_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "http://127.0.0.1:9", NANOCLAW_NIXPKGS="<nixpkgs>")
    empty = tmp_path / "no-nix"
    empty.mkdir()
    # no group declares packages: a host without Nix is fine
    quiet = await check_nix(settings, search_path=str(empty))
    assert quiet.ok and "none needs Nix" in quiet.what
    store = await Store.open(settings.layout.db)
    await store.save_group(Group("work", "work", packages=("jq",)))
    await store.close()
    check = await check_nix(settings, search_path=str(empty))
    assert not check.ok
    assert check.what.startswith("Nix is not installed on this host")
    assert "group(s) work declare packages: their runs fail" in check.what
    assert "sudo apt-get install nix-bin" in check.fix and "nixos.org/download" in check.fix


async def test_doctor_checks_nixpkgs_and_counts_built_environments(tmp_path: Path) -> None:
    need_nix()
    settings = settings_for(tmp_path, "http://127.0.0.1:9", NANOCLAW_NIXPKGS=str(STUB))
    store = await Store.open(settings.layout.db)
    await store.save_group(Group("work", "work", profile="strict"))
    await store.close()
    check = await check_nix(settings)
    assert check.ok, check.what
    assert check.what.startswith("nix-build (Nix) ") and f"with nixpkgs {STUB}: " in check.what
    assert check.what.endswith(
        "0 of 1 group environments built; build the rest: nanoclaw env build --all"
    )
    bad = settings_for(tmp_path, "http://127.0.0.1:9", NANOCLAW_NIXPKGS=str(tmp_path / "none"))
    check = await check_nix(bad)
    assert not check.ok and "no such file or directory" in check.what
    assert check.fix.startswith("set NANOCLAW_NIXPKGS to a nixpkgs")
