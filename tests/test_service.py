"""`nanoclaw service`: the rendered unit, systemd-analyze's verdict on it, and install,
status and uninstall as subprocesses against a temp unit dir and a recording systemctl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from nanoclaw.cli.service import UnitSpec, exec_start, render_unit
from nanoclaw.errors import ConfigError

ANALYZE = shutil.which("systemd-analyze")
# What would break bwrap (user namespaces, a fresh /proc) or the root daemon's cgroups.
FORBIDDEN = (
    "PrivateUsers",
    "RestrictNamespaces",
    "ProtectKernelTunables",
    "ProtectProc",
    "ProcSubset",
    "ProtectControlGroups",
    "SystemCallFilter",
    "PrivateDevices",
)


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) in order; repeated keys (Environment=) kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        sections[current].append((key, value))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit[section] if k == key]


def spec(tmp_path: Path, **kw: object) -> UnitSpec:
    fields: dict[str, object] = {
        "scope": "system",
        "exec_start": (sys.executable, "-m", "nanoclaw.cli.main", "run"),
        "home": tmp_path,
        "path": "/usr/local/bin:/usr/bin:/bin",
        "user": "alice",
    }
    fields.update(kw)
    return UnitSpec(**fields)  # type: ignore[arg-type]


def test_system_unit_runs_the_daemon_in_the_home(tmp_path: Path) -> None:
    unit = parse_unit(render_unit(spec(tmp_path)))
    assert list(unit) == ["Unit", "Service", "Install"]
    assert values(unit, "Service", "ExecStart") == [f"{sys.executable} -m nanoclaw.cli.main run"]
    assert values(unit, "Service", "WorkingDirectory") == [str(tmp_path)]
    assert f"NANOCLAW_HOME={tmp_path}" in values(unit, "Service", "Environment")
    assert values(unit, "Service", "EnvironmentFile") == [f"-{tmp_path}/.env"]
    assert values(unit, "Service", "User") == ["alice"]
    assert values(unit, "Service", "Restart") == ["on-failure"]
    assert values(unit, "Service", "RestartSec") == ["5"]
    assert values(unit, "Service", "RestartPreventExitStatus") == ["2"]  # a bad setting
    assert values(unit, "Service", "StandardOutput") == ["journal"]
    assert values(unit, "Service", "StandardError") == ["journal"]
    assert values(unit, "Service", "NoNewPrivileges") == ["yes"]
    assert values(unit, "Service", "ProtectSystem") == ["full"]
    assert values(unit, "Unit", "After") == ["network-online.target"]
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]
    keys = {k for k, _ in unit["Service"]}
    assert not keys & set(FORBIDDEN)


def test_setuid_bwrap_gets_no_option_that_implies_no_new_privileges(tmp_path: Path) -> None:
    unit = parse_unit(render_unit(spec(tmp_path, no_new_privileges=False)))
    keys = {k for k, _ in unit["Service"]}
    implying = {"NoNewPrivileges", "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime"}
    assert not keys & (implying | {"ProtectKernelModules"})
    assert {"PrivateTmp", "ProtectSystem"} <= keys  # mount options do not imply it as root


def test_user_unit_has_no_filesystem_sandboxing(tmp_path: Path) -> None:
    """In a user manager they would imply PrivateUsers=, which bwrap cannot live with."""
    unit = parse_unit(render_unit(spec(tmp_path, scope="user", user=None)))
    keys = {k for k, _ in unit["Service"]}
    assert not keys & {"User", "PrivateTmp", "ProtectSystem", "ProtectKernelModules"}
    assert not keys & set(FORBIDDEN)
    assert "After" not in {k for k, _ in unit["Unit"]}
    assert values(unit, "Install", "WantedBy") == ["default.target"]


def test_odd_home_is_escaped(tmp_path: Path) -> None:
    home = tmp_path / 'my 100% "home"'
    text = render_unit(spec(home, exec_start=("/opt/nano claw/bin/nanoclaw", "run", "$HOME")))
    unit = parse_unit(text)
    assert values(unit, "Service", "WorkingDirectory") == [str(home).replace("%", "%%")]
    env = values(unit, "Service", "Environment")[0]
    assert env.startswith('"NANOCLAW_HOME=') and '100%% \\"home\\""' in env
    assert values(unit, "Service", "ExecStart") == ['"/opt/nano claw/bin/nanoclaw" run $$HOME']
    with pytest.raises(ConfigError, match="newline"):
        render_unit(spec(tmp_path / "a\nb"))


def test_exec_start_prefers_the_checkout_then_the_entry_point(tmp_path: Path) -> None:
    uv, entry = "/usr/bin/uv", "/usr/local/bin/nanoclaw"
    assert exec_start(tmp_path, uv, entry) == (
        uv,
        "run",
        "--frozen",
        "--project",
        str(tmp_path),
        "nanoclaw",
        "run",
    )
    assert exec_start(None, uv, entry) == (entry, "run")
    assert exec_start(tmp_path, None, entry) == (entry, "run")
    assert exec_start(None, None, None) == (sys.executable, "-m", "nanoclaw.cli.main", "run")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt: systemd)")
@pytest.mark.parametrize(("scope", "user"), [("system", "root"), ("system", None), ("user", None)])
def test_systemd_analyze_verify_accepts_the_unit(
    tmp_path: Path, scope: str, user: str | None
) -> None:
    assert ANALYZE is not None
    home = tmp_path / "home"
    home.mkdir()
    units = tmp_path / "units"
    units.mkdir()
    path = units / "nanoclaw.service"
    path.write_text(render_unit(spec(home, scope=scope, user=user)))
    runtime = tmp_path / "runtime"  # a user manager wants one, even just to verify
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    flags = ["--user"] if scope == "user" else []
    proc = subprocess.run(
        [ANALYZE, *flags, "verify", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "nanoclaw" in ln]
    assert proc.returncode == 0 and complaints == [], proc.stdout + proc.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt: systemd)")
def test_systemd_analyze_verify_can_fail(tmp_path: Path) -> None:
    """The check above means something: a unit with a relative ExecStart is refused."""
    assert ANALYZE is not None
    path = tmp_path / "nanoclaw.service"
    text = render_unit(spec(tmp_path)).replace(f"ExecStart={sys.executable}", "ExecStart=python")
    path.write_text(text)
    proc = subprocess.run(
        [ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0


def fake_systemctl(tmp_path: Path, code: int = 0) -> tuple[Path, Path]:
    """A systemctl that records each call's arguments, one line each, and exits `code`."""
    log = tmp_path / "systemctl.log"
    script = tmp_path / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit {code}\n')
    script.chmod(0o755)
    return script, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_install_status_uninstall_drive_systemctl(home: Path, tmp_path: Path) -> None:
    ctl, log = fake_systemctl(tmp_path)
    units = tmp_path / "units"
    where = ("--unit-dir", str(units), "--systemctl", str(ctl))
    proc = run_cli(home, "service", "install", *where)
    assert proc.returncode == 0, proc.stderr
    unit = parse_unit((units / "nanoclaw.service").read_text())
    assert values(unit, "Service", "WorkingDirectory") == [str(home)]
    assert f"NANOCLAW_HOME={home}" in values(unit, "Service", "Environment")
    assert (units / "nanoclaw.service").stat().st_mode & 0o777 == 0o644
    assert calls(log) == ["daemon-reload", "enable --now nanoclaw.service"]
    assert "enabled and started" in proc.stdout

    proc = run_cli(home, "service", "status", *where)
    assert proc.returncode == 0
    assert calls(log)[-1] == "status --no-pager nanoclaw.service"

    proc = run_cli(home, "service", "uninstall", *where)
    assert proc.returncode == 0, proc.stderr
    assert not (units / "nanoclaw.service").exists()
    assert calls(log)[-2:] == ["disable --now nanoclaw.service", "daemon-reload"]

    proc = run_cli(home, "service", "status", *where)
    assert proc.returncode == 3 and "not installed" in proc.stdout
    proc = run_cli(home, "service", "uninstall", *where)
    assert proc.returncode == 1 and "not installed" in proc.stdout


def test_user_install_passes_user_to_systemctl(home: Path, tmp_path: Path) -> None:
    ctl, log = fake_systemctl(tmp_path)
    units = tmp_path / "units"
    proc = run_cli(
        home, "service", "install", "--user", "--unit-dir", str(units), "--systemctl", str(ctl)
    )
    assert proc.returncode == 0, proc.stderr
    assert calls(log) == ["--user daemon-reload", "--user enable --now nanoclaw.service"]
    assert "loginctl enable-linger" in proc.stdout
    unit = parse_unit((units / "nanoclaw.service").read_text())
    assert values(unit, "Install", "WantedBy") == ["default.target"]


def test_without_systemctl_install_says_what_to_run(home: Path, tmp_path: Path) -> None:
    units = tmp_path / "units"
    missing = str(tmp_path / "no-systemctl")
    proc = run_cli(
        home, "service", "install", "--user", "--unit-dir", str(units), "--systemctl", missing
    )
    assert proc.returncode == 0, proc.stderr
    assert (units / "nanoclaw.service").is_file()
    assert "systemctl --user daemon-reload" in proc.stdout
    assert "systemctl --user enable --now nanoclaw.service" in proc.stdout


def test_a_failing_systemctl_fails_the_install(home: Path, tmp_path: Path) -> None:
    ctl, log = fake_systemctl(tmp_path, code=1)
    units = tmp_path / "units"
    proc = run_cli(home, "service", "install", "--unit-dir", str(units), "--systemctl", str(ctl))
    assert proc.returncode == 1
    assert "systemctl daemon-reload" in proc.stderr
    assert calls(log) == ["daemon-reload"]  # not enabled after a failed reload
