"""`nanoclaw doctor`: every check runs for real and a failure says how to fix it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import cli_env, settings_for

from nanoclaw.doctor import check_seccomp


def doctor(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli", "doctor"],
        cwd=home, env=cli_env(home, **env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_doctor_passes_with_credential(tmp_path: Path) -> None:
    proc = doctor(tmp_path, ANTHROPIC_API_KEY="sk-ant-x")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok    user, pid and network namespaces work" in proc.stdout
    assert "starts inside the sandbox" in proc.stdout
    assert "ok    a cgroup per run caps its processes and memory" in proc.stdout  # root here
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
