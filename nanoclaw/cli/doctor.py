"""`nanoclaw doctor`: checks what a run needs and says how to fix each failure.

Each check is a function returning (ok, what, fix); the command prints them all and
exits non-zero if any failed, so it doubles as a deployment smoke test. Credentials are
checked with one live call each (`credcheck`): "ok" means the call worked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import SecretStr

from nanoclaw.agent.protocol import LLM_SOCK
from nanoclaw.channel import enabled_channels, load_channels
from nanoclaw.cli import credcheck
from nanoclaw.config import Settings, require_credential
from nanoclaw.errors import ConfigError, SandboxError, StoreError
from nanoclaw.nixenv import EnvError, Environments, nix
from nanoclaw.sandbox.cgroup import RunCgroup
from nanoclaw.sandbox.launcher import AGENT_CODE
from nanoclaw.sandbox.plan import Limits, SandboxPlan, write_etc
from nanoclaw.sandbox.runtime import detect_runtime
from nanoclaw.sandbox.seccomp import INSTALL_FIX, LIBRARY, FilterUnavailable, build_filter
from nanoclaw.sandbox.spawn import CWD, bwrap_launch
from nanoclaw.store.messages import Store


@dataclass(frozen=True)
class Check:
    ok: bool
    what: str
    fix: str = ""


def check_bwrap() -> Check:
    path = shutil.which("bwrap")
    if path is None:
        return Check(False, "bubblewrap (bwrap) not found", "sudo apt-get install -y bubblewrap")
    return Check(True, f"bubblewrap at {path}")


def check_userns() -> Check:
    argv = [
        "bwrap",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "true",
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=20, env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(False, f"bwrap cannot run: {exc}", "sudo apt-get install -y bubblewrap")
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        return Check(
            False,
            f"user namespaces unavailable: {err[-1] if err else proc.returncode}",
            "sudo sysctl -w kernel.unprivileged_userns_clone=1 (Debian) or "
            "kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 24.04)",
        )
    return Check(True, "user, pid and network namespaces work")


def _probe_plan(settings: Settings) -> SandboxPlan:
    layout = settings.layout
    probe = layout.store / "sandbox" / "probe"
    for sub in ("workspace", "ipc/errors", "global", "skills"):
        (probe / sub).mkdir(parents=True, exist_ok=True)
    (probe / "ipc" / LLM_SOCK).touch()
    return SandboxPlan(
        workspace=probe / "workspace",
        ipc=probe / "ipc",
        global_dir=probe / "global",
        global_writable=False,
        skills=probe / "skills",
        agent_code=AGENT_CODE,
        etc=write_etc(layout.sandbox_etc),
        runtime=detect_runtime(),
    )


def _run_sandboxed(
    plan: SandboxPlan, command: list[str], bpf: bytes
) -> subprocess.CompletedProcess[bytes]:
    """`command` in a sandbox started as spawn.py starts one (limits are inside)."""
    with bwrap_launch(plan, command, bpf) as (argv, fds):
        return subprocess.run(argv, capture_output=True, timeout=60, env={}, cwd=CWD, pass_fds=fds)


def check_seccomp(settings: Settings, library: str = LIBRARY) -> Check:
    """The filter builds, and a sandbox runs under it: `Seccomp: 2` in its own status."""
    status = ["/bin/sh", "-c", "grep '^Seccomp:' /proc/self/status"]
    try:
        program = build_filter(library=library)
        proc = _run_sandboxed(_probe_plan(settings), status, program.bpf)
    except FilterUnavailable as exc:
        return Check(False, f"no seccomp filter, so no sandbox may start: {exc}", INSTALL_FIX)
    except (OSError, subprocess.TimeoutExpired) as exc:
        what = f"sandbox with the seccomp filter did not start: {exc}"
        return Check(False, what, "see the bubblewrap checks above")
    mode = proc.stdout.decode(errors="replace").split()
    if proc.returncode != 0 or mode != ["Seccomp:", "2"]:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        what = f"seccomp filter not active in the sandbox: {mode or err[-1:]}"
        return Check(False, what, "install bubblewrap 0.3 or later (it loads the filter)")
    unknown = f"; libseccomp does not know {', '.join(program.unknown)}" if program.unknown else ""
    return Check(True, f"seccomp filter active in every sandbox ({program.rules} rules{unknown})")


def check_sandbox(settings: Settings) -> Check:
    plan = _probe_plan(settings)
    runtime = plan.runtime
    code = "import json, http.client, socket, zoneinfo"  # what the runner imports: stdlib only
    try:
        proc = _run_sandboxed(plan, [runtime.python, "-I", "-S", "-c", code], build_filter().bpf)
    except FilterUnavailable as exc:
        return Check(False, f"sandbox not tried: {exc}", INSTALL_FIX)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(
            False, f"sandbox did not start: {exc}", "run `nanoclaw doctor` as the daemon user"
        )
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        return Check(
            False,
            f"agent runtime fails in the sandbox: {err[-1] if err else proc.returncode}",
            "reinstall with `uv sync --compile-bytecode`; the interpreter must be readable",
        )
    return Check(True, "the agent runtime (python, standard library only) starts in the sandbox")


def check_cgroup() -> Check:
    """A root daemon needs a pids cgroup per run (root is exempt from RLIMIT_NPROC)."""
    try:
        group = RunCgroup.create(Limits(), "doctor")
    except SandboxError as exc:
        return Check(
            False,
            str(exc),
            "run the daemon as an ordinary user, or give it a "
            "writable cgroup hierarchy with the pids controller",
        )
    made = bool(group.dirs)
    group.remove()
    if not made:
        return Check(True, "no cgroup for runs: RLIMIT_NPROC and RLIMIT_AS bind an ordinary user")
    return Check(True, "a cgroup per run caps its processes and memory")


def _check(verdict: credcheck.Verdict) -> Check:
    return Check(verdict.ok, verdict.what, verdict.fix)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""


async def check_credential(settings: Settings) -> Check:
    """The key works at the endpoint the proxy forwards to: one free call (count_tokens;
    GET /models for the OpenAI-style providers)."""
    if settings.llm_provider != "anthropic":
        try:
            require_credential(settings)
        except ConfigError as exc:
            return Check(False, str(exc), "see the Providers section of the README")
        key, model = _secret(settings.openai_api_key), settings.nanoclaw_model
        return _check(await credcheck.openai_key(settings.llm_base_url, key, model))
    key = _secret(settings.anthropic_api_key)
    if not key:
        return Check(
            False,
            "ANTHROPIC_API_KEY is not set",
            "add ANTHROPIC_API_KEY=sk-ant-... to .env, or run `nanoclaw setup`",
        )
    base, model = settings.anthropic_base_url, settings.nanoclaw_model
    return _check(await credcheck.model_key(base, key, model))


async def channel_login(settings: Settings, name: str) -> Check:
    """The channel's own credentials, tried with one real login (Telegram getMe, XMPP
    session, Matrix whoami or login)."""
    s = settings
    if name == "tg":
        return _check(
            await credcheck.telegram_token(s.telegram_api_url, _secret(s.telegram_bot_token))
        )
    if name == "xmpp":
        return _check(
            await credcheck.xmpp_login(
                s.xmpp_jid or "",
                _secret(s.xmpp_password),
                server=s.xmpp_server,
                tls=s.xmpp_tls,
                ca_file=s.xmpp_ca_file,
            )
        )
    if name == "mx":
        return _check(
            await credcheck.matrix_login(
                s.matrix_homeserver or "",
                s.matrix_user_id or "",
                password=_secret(s.matrix_password),
                token=_secret(s.matrix_access_token),
            )
        )
    return Check(True, f"channel {name}: no login to check")


async def check_store(settings: Settings) -> Check:
    try:
        store = await Store.open(settings.layout.db)
        groups = await store.groups()
        await store.close()
    except StoreError as exc:
        return Check(False, str(exc), f"make {settings.layout.store} writable by this user")
    return Check(True, f"store {settings.layout.db} ({len(groups)} groups)")


async def check_nix(settings: Settings, search_path: str | None = None) -> Check:
    """Nix and NANOCLAW_NIXPKGS, for the groups that declare packages or a profile; a host
    where none does passes without Nix. `search_path` replaces PATH for finding Nix."""
    environ = dict(os.environ) if search_path is None else {**os.environ, "PATH": search_path}
    envs = Environments(settings.layout, settings.nanoclaw_nixpkgs, environ=environ)
    try:
        store = await Store.open(settings.layout.db)
        groups = await store.groups()
        await store.close()
    except StoreError:
        groups = []  # check_store says why
    wanting = [g for g in groups if g.packages or g.profile is not None]
    need = f"group(s) {', '.join(g.folder for g in wanting)} declare packages"
    fix = nix.INSTALL_NIX
    try:
        tools = envs.tools()
        fix = "set NANOCLAW_NIXPKGS to a nixpkgs that `import PATH {}` turns into a package set"
        path = await asyncio.to_thread(envs.nixpkgs_path, tools)
        version = await asyncio.to_thread(nix.probe, tools, path)
    except EnvError as exc:
        if wanting:
            return Check(False, f"{exc} ({need}: their runs fail)", fix)
        return Check(True, f"no group declares packages, so none needs Nix ({exc})")
    built = sum(await asyncio.to_thread(lambda: [envs.cached(g) is not None for g in wanting]))
    todo = "; build the rest: nanoclaw env build --all" if built < len(wanting) else ""
    return Check(
        True,
        f"{version} with nixpkgs {path}: {built} of {len(wanting)} group environments built{todo}",
    )


async def check_channels(settings: Settings) -> list[Check]:
    names = enabled_channels(settings)
    loaded = load_channels(settings, names) if names else {}
    out = [Check(True, "terminal channel (nanoclaw chat)")]
    logins = [channel_login(settings, name) for name in names if name in loaded]
    for name in names:
        if name not in loaded:
            out.append(Check(False, f"channel {name} cannot load", "uv sync (install its extra)"))
    return out + list(await asyncio.gather(*logins))


async def run_checks(settings: Settings) -> list[Check]:
    checks = [check_bwrap()]
    sync: list[Callable[[], Check]] = [
        check_userns,
        check_cgroup,
        lambda: check_sandbox(settings),
        lambda: check_seccomp(settings),
    ]
    if checks[0].ok:
        for fn in sync:
            checks.append(await asyncio.to_thread(fn))
    later: list[Awaitable[Check]] = [
        check_credential(settings),
        check_store(settings),
        check_nix(settings),
    ]
    checks += [await c for c in later]
    checks += await check_channels(settings)
    return checks


def report(checks: list[Check]) -> tuple[str, bool]:
    lines = []
    for c in checks:
        lines.append(f"{'ok  ' if c.ok else 'FAIL'}  {c.what}")
        if not c.ok and c.fix:
            lines.append(f"      fix: {c.fix}")
    return "\n".join(lines), all(c.ok for c in checks)
