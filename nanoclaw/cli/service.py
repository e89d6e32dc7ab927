"""`nanoclaw service install/status/uninstall [--user]`: a systemd unit for `nanoclaw run`.

`render_unit` is pure: the unit text from a `UnitSpec`. The rest writes or removes the file
and drives `systemctl` (both injectable, `--unit-dir` and `--systemctl`, so tests need no systemd).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nanoclaw.config import Settings
from nanoclaw.errors import ConfigError

Scope = Literal["system", "user"]
UNIT_NAME = "nanoclaw.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
RESTART_SEC = 5
STOP_TIMEOUT_S = 30  # the daemon closes live runs within 5 s of SIGTERM (app.CLOSE_GRACE_S)
CONFIG_EXIT = 2  # a bad setting: restarting would only repeat it


@dataclass(frozen=True)
class UnitSpec:
    scope: Scope
    exec_start: tuple[str, ...]
    home: Path  # NANOCLAW_HOME, also the working directory (./.env is read from there)
    path: str  # PATH for the daemon: bwrap, nix and uv as the installer found them
    user: str | None = None  # system units: the account that runs the daemon
    no_new_privileges: bool = True  # False when bwrap is setuid: the bit would be ignored


def literal(value: str) -> str:
    """`value` as a path setting's value (WorkingDirectory=): % would start a specifier."""
    if "\n" in value or "\r" in value:
        raise ConfigError(f"{value[:64]!r}: a newline cannot go into a systemd unit")
    return value.replace("%", "%%")


def word(value: str) -> str:
    """`value` as one quoted word (ExecStart=, Environment=): specifiers taken literally,
    quoted when it holds blanks, quotes or backslashes."""
    value = literal(value)
    if any(c in value for c in " \t\"\\'"):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def render_unit(spec: UnitSpec) -> str:
    """Pure: the unit file for `spec`."""
    home = str(spec.home)
    argv = " ".join(word(arg).replace("$", "$$") for arg in spec.exec_start)
    unit = [
        "# Written by `nanoclaw service install`; `nanoclaw service uninstall` removes it.",
        "[Unit]",
        "Description=nanoclaw chat assistant",
    ]
    if spec.scope == "system":  # a user manager has no network-online.target
        unit += ["Wants=network-online.target", "After=network-online.target"]
    service = ["", "[Service]", "Type=simple"]
    if spec.scope == "system" and spec.user:
        service.append(f"User={literal(spec.user)}")
    service += [
        f"WorkingDirectory={literal(home)}",
        f"Environment={word('NANOCLAW_HOME=' + home)}",
        f"Environment={word('PATH=' + spec.path)}",
        # secrets stay in the home's .env (mode 600), never in the unit; '-': may be absent
        f"EnvironmentFile=-{literal(str(spec.home / '.env'))}",
        f"ExecStart={argv}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        f"RestartPreventExitStatus={CONFIG_EXIT}",
        # SIGTERM to the daemon alone: it closes its runs, then kills their process groups
        "KillMode=mixed",
        f"TimeoutStopSec={STOP_TIMEOUT_S}",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=nanoclaw",
    ]
    service += hardening(spec)
    target = "multi-user.target" if spec.scope == "system" else "default.target"
    return "\n".join([*unit, *service, "", "[Install]", f"WantedBy={target}", ""])


def hardening(spec: UnitSpec) -> list[str]:
    """Pure: the sandboxing settings that leave bwrap working.

    bwrap makes user, pid and mount namespaces and mounts a new /proc: PrivateUsers= and
    RestrictNamespaces= forbid the first, and a /proc with parts hidden or overmounted
    (ProtectKernelTunables=, ProtectProc=, ProcSubset=) refuses the last; a root daemon
    makes a pids cgroup per run, which ProtectControlGroups= would stop. In a user manager
    every filesystem option implies PrivateUsers=, so a user unit gets none of them.
    """
    out = ["# bwrap needs user namespaces and a fresh /proc: see nanoclaw/cli/service.py"]
    if spec.no_new_privileges:  # seccomp-based options imply it for a non-root User=:
        # with a setuid bwrap, that would drop the bit and break every sandbox
        out += [
            "NoNewPrivileges=yes",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
            "RestrictRealtime=yes",
        ]
        if spec.scope == "system":
            out.append("ProtectKernelModules=yes")
    if spec.scope == "system":
        out += ["PrivateTmp=yes", "ProtectSystem=full"]
    return out


def exec_start(checkout: Path | None, uv: str | None, entry: str | None) -> tuple[str, ...]:
    """Pure: `uv run --frozen` in a source checkout (so an update is synced at the next
    start), else the installed entry point, else this interpreter's module."""
    if checkout is not None and uv is not None:
        return (uv, "run", "--frozen", "--project", str(checkout), "nanoclaw", "run")
    if entry is not None:
        return (entry, "run")
    return (sys.executable, "-m", "nanoclaw.cli.main", "run")


def source_checkout() -> Path | None:
    """The project this code runs from, when it is a uv checkout (pyproject and uv.lock)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "uv.lock").is_file() else None


def bwrap_is_setuid(path: str) -> bool:
    found = shutil.which("bwrap", path=path)
    return found is not None and bool(os.stat(found).st_mode & stat.S_ISUID)


def unit_dir(scope: Scope, given: Path | None) -> Path:
    if given is not None:
        return given
    if scope == "system":
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def spec_for(settings: Settings, scope: Scope) -> UnitSpec:
    home = settings.nanoclaw_home.resolve()
    path = os.environ.get("PATH") or os.defpath
    entry = shutil.which("nanoclaw", path=path)
    user = None
    if scope == "system":  # the home's owner, so what the daemon writes stays theirs
        try:
            user = pwd.getpwuid(home.stat().st_uid).pw_name
        except (OSError, KeyError) as exc:
            raise ConfigError(f"NANOCLAW_HOME {home}: cannot find its owner ({exc})") from exc
    return UnitSpec(
        scope=scope,
        exec_start=exec_start(source_checkout(), shutil.which("uv", path=path), entry),
        home=home,
        path=path,
        user=user,
        no_new_privileges=not bwrap_is_setuid(path),
    )


class Systemctl:
    """`systemctl [--user]`, or None when the binary is missing."""

    def __init__(self, binary: str, scope: Scope) -> None:
        self.binary = shutil.which(binary)
        self.scope = scope

    def argv(self, *args: str) -> list[str]:
        flag = ["--user"] if self.scope == "user" else []
        return [self.binary or "systemctl", *flag, *args]

    def shown(self, *args: str) -> str:
        return " ".join(["systemctl", *self.argv(*args)[1:]])

    def __call__(self, *args: str) -> int:
        try:
            return subprocess.run(self.argv(*args), check=False).returncode
        except OSError as exc:
            print(f"nanoclaw: {self.argv(*args)[0]}: {exc.strerror}", file=sys.stderr)
            return 1


def install(settings: Settings, scope: Scope, where: Path | None, ctl: Systemctl) -> int:
    if scope == "system" and where is None and os.geteuid() != 0:
        raise ConfigError(
            "a system unit goes to /etc/systemd/system: run it with sudo, or use --user"
        )
    spec = spec_for(settings, scope)
    target = unit_dir(scope, where) / UNIT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(render_unit(spec), encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(target)
    print(f"wrote {target}")
    print(f"  runs: {' '.join(spec.exec_start)}")
    print(f"  home: {spec.home} (secrets from {spec.home / '.env'})")
    enable = (("daemon-reload",), ("enable", "--now", UNIT_NAME))
    if ctl.binary is None:
        print("systemctl not found: to start it, run")
        for args in enable:
            print(f"  {ctl.shown(*args)}")
        return 0
    for args in enable:
        if ctl(*args) != 0:
            print(
                f"nanoclaw: `{ctl.shown(*args)}` failed; run it once systemd is up", file=sys.stderr
            )
            return 1
    logs = "journalctl --user -u nanoclaw" if scope == "user" else "journalctl -u nanoclaw"
    print(f"enabled and started; logs: {logs} -f")
    if scope == "user":
        print("to keep it running while you are logged out: loginctl enable-linger")
    return 0


def status(scope: Scope, where: Path | None, ctl: Systemctl) -> int:
    target = unit_dir(scope, where) / UNIT_NAME
    if not target.is_file():
        print(f"not installed (no {target})")
        return 3  # what `systemctl status` says of a unit that is not running
    print(f"unit: {target}")
    if ctl.binary is None:
        print("systemctl not found: cannot say whether it runs")
        return 3
    return ctl("status", "--no-pager", UNIT_NAME)


def uninstall(scope: Scope, where: Path | None, ctl: Systemctl) -> int:
    target = unit_dir(scope, where) / UNIT_NAME
    if not target.is_file():
        print(f"not installed (no {target})")
        return 1
    if ctl.binary is not None:
        ctl("disable", "--now", UNIT_NAME)  # a unit that never started is no error here
    target.unlink()
    if ctl.binary is not None:
        ctl("daemon-reload")
    print(f"removed {target}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "service", help="a systemd unit for `nanoclaw run`: install, status, uninstall"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("install", "write the unit, enable and start it"),
        ("status", "whether it is installed and running"),
        ("uninstall", "stop, disable and remove it"),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument("--user", action="store_true", help="a user unit (systemctl --user)")
        a.add_argument(
            "--unit-dir",
            type=Path,
            help="where the unit goes (default /etc/systemd/system, ~/.config/systemd/user)",
        )
        a.add_argument("--systemctl", default="systemctl", help="the systemctl to run")


def run(settings: Settings, args: argparse.Namespace) -> int:
    scope: Scope = "user" if args.user else "system"
    ctl = Systemctl(args.systemctl, scope)
    if args.action == "install":
        return install(settings, scope, args.unit_dir, ctl)
    if args.action == "status":
        return status(scope, args.unit_dir, ctl)
    return uninstall(scope, args.unit_dir, ctl)
