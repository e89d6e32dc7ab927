"""The bwrap plan as a pure function (a group with a Nix environment too), and bwrap itself
with that plan outside the daemon."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from nanoclaw.sandbox.plan import (
    ENV_LINKS,
    ENV_PATH,
    Limits,
    NixMount,
    SandboxPlan,
    agent_command,
    bwrap_argv,
    limits_prefix,
    write_etc,
)
from nanoclaw.sandbox.runtime import (
    NIX_STORE,
    PROC_MASKED,
    Closure,
    Host,
    Runtime,
    detect_host,
    detect_runtime,
    parse_ldd,
)


def plan_at(base: Path, runtime: Runtime, **kw: object) -> SandboxPlan:
    """A plan whose host paths all lie below `base` (which need not exist: argv tests)."""
    return SandboxPlan(
        workspace=base / "ws",
        ipc=base / "ipc",
        global_dir=base / "global",
        global_writable=False,
        skills=base / "skills",
        agent_code=base / "agent",
        etc=base / "etc",
        runtime=runtime,
        **kw,  # type: ignore[arg-type]
    )


def plan_in(base: Path, runtime: Runtime, **kw: object) -> SandboxPlan:
    for sub in ("ws", "ipc/errors", "global", "skills", "etc", "agent"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "ipc" / "llm.sock").touch()
    write_etc(base / "etc")
    return plan_at(base, runtime, **kw)


def mounts(argv: list[str]) -> dict[str, tuple[str, str]]:
    """inside path -> (kind, host source) for every bind in argv."""
    out: dict[str, tuple[str, str]] = {}
    for i, arg in enumerate(argv):
        if arg in ("--bind", "--ro-bind", "--ro-bind-try"):
            out[argv[i + 2]] = (arg, argv[i + 1])
    return out


def test_plan_has_exactly_the_spec_mounts(tmp_path: Path) -> None:
    plan = plan_in(tmp_path, detect_runtime())
    argv = bwrap_argv(plan, ["/bin/true"])
    m = mounts(argv)
    assert m["/workspace"] == ("--bind", str(tmp_path / "ws"))
    assert m["/ipc"] == ("--bind", str(tmp_path / "ipc"))
    assert m["/global"] == ("--ro-bind", str(tmp_path / "global"))
    assert m["/skills"] == ("--ro-bind", str(tmp_path / "skills"))
    assert m["/ipc/llm.sock"][0] == "--ro-bind"
    assert m["/runtime/lib/agent"] == ("--ro-bind", str(tmp_path / "agent"))
    writable = {inside for inside, (kind, _) in m.items() if kind == "--bind"}
    assert writable == {"/workspace", "/ipc"}
    sources = [src for _, src in m.values()]
    home = os.path.expanduser("~")
    assert not any(src in ("/", "/etc", home, "/home", str(Path.cwd())) for src in sources)
    assert "/etc/shadow" not in sources
    for flag in (
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--tmpfs", argv.index("--size")) + 1] == "/tmp"
    assert argv.index("--remount-ro") < argv.index("--chdir")


def test_seccomp_fd_and_masked_proc_files(tmp_path: Path) -> None:
    plan = plan_in(tmp_path, detect_runtime())
    assert "--seccomp" not in bwrap_argv(plan, ["/bin/true"])
    argv = bwrap_argv(plan, ["/bin/true"], seccomp_fd=7)
    assert argv[argv.index("--seccomp") + 1] == "7"
    assert argv.index("--seccomp") < argv.index("--")  # an option: it travels in --args
    masked = {
        argv[i + 2] for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] == "/dev/null"
    }
    present = {f"/proc/{name}" for name in PROC_MASKED if os.path.exists(f"/proc/{name}")}
    assert masked == present and "/proc/timer_list" in masked


NOWHERE = Path("/nonexistent-nanoclaw-host")
# A host unlike this one: /bin a link to an odd place, a real /lib32, a Nix store exactly
# when this machine has none, and a /proc file no kernel has.
IMAGINED = Host(
    top_dirs=(("/bin", "elsewhere/bin"), ("/lib32", None)),
    nix_store=not Path("/nix/store").is_dir(),
    proc_masked=("no_such_file",),
)


def test_argv_is_a_pure_function_of_the_plan() -> None:
    """Built from a hand-made runtime of a host that does not exist, with paths that do not
    exist: the argv follows the description, never this machine's filesystem."""
    runtime = Runtime(
        mounts=((str(NOWHERE / "py"), "/runtime/python"),),
        python="/runtime/python/bin/python3",
        masked=("/runtime/python/lib/python3/site-packages",),
        host=IMAGINED,
        prlimit="/imagined/prlimit",
    )
    plan = SandboxPlan(
        workspace=NOWHERE / "ws",
        ipc=NOWHERE / "ipc",
        global_dir=NOWHERE / "global",
        global_writable=False,
        skills=NOWHERE / "skills",
        agent_code=NOWHERE / "agent",
        etc=NOWHERE / "etc",
        runtime=runtime,
        network="allowlist",
        sockets=NOWHERE / "sock",
    )
    argv = bwrap_argv(plan, ["/bin/true"])
    assert argv == bwrap_argv(plan, ["/bin/true"])
    triples = {tuple(argv[i : i + 3]) for i in range(len(argv) - 2)}
    assert ("--symlink", "elsewhere/bin", "/bin") in triples
    assert ("--ro-bind", "/lib32", "/lib32") in triples
    nix = ("--ro-bind", "/nix/store", "/nix/store")
    assert (nix in triples) == IMAGINED.nix_store
    masked = {
        argv[i + 2] for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] == "/dev/null"
    }
    assert masked == {"/proc/no_such_file"}
    assert ("--tmpfs", "/runtime/python/lib/python3/site-packages", "--remount-ro") in triples
    assert ("--ro-bind", str(NOWHERE / "sock" / "llm.sock"), "/ipc/llm.sock") in triples
    assert ("--ro-bind-try", str(NOWHERE / "sock" / "egress.sock"), "/ipc/egress.sock") in triples
    assert argv[argv.index("--chdir") + 3] == "/imagined/prlimit"
    assert argv[-1] == "/bin/true"


def test_detect_host_reads_this_machine() -> None:
    host = detect_host()
    for path, target in host.top_dirs:
        assert os.readlink(path) == target if target else not os.path.islink(path)
    names = {path for path, _ in host.top_dirs}
    assert "/bin" in names and "/lib" in names
    assert host.nix_store == Path("/nix/store").is_dir()
    assert set(host.proc_masked) == {n for n in PROC_MASKED if os.path.exists(f"/proc/{n}")}


def test_main_gets_writable_global_and_full_network_shares_net(tmp_path: Path) -> None:
    plan = replace(plan_in(tmp_path, detect_runtime()), global_writable=True, network="full")
    argv = bwrap_argv(plan, ["/bin/true"])
    assert mounts(argv)["/global"][0] == "--bind"
    assert "--unshare-net" not in argv
    assert mounts(argv).get("/etc/resolv.conf", ("", ""))[0] == "--ro-bind-try"


def test_limits_prefix_sets_hard_limits() -> None:
    prefix = limits_prefix(Limits(open_files=64, processes=32))
    assert prefix[0] == "prlimit" and prefix[-1] == "--"
    assert "--nofile=64" in prefix and "--nproc=32" in prefix and "--core=0" in prefix


def test_agent_command_is_isolated_python() -> None:
    rt = Runtime(
        mounts=(),
        python="/runtime/python/bin/python3.11",
        masked=("/runtime/python/lib/python3.11/site-packages",),
        host=IMAGINED,
    )
    cmd = agent_command(rt)
    assert cmd[:4] == [rt.python, "-I", "-S", "-B"]  # no `site`: no site dir on sys.path
    assert "'/runtime/lib'" in cmd[-1] and "run_module('agent'" in cmd[-1]
    assert "site-packages" not in " ".join(cmd)


def test_sandbox_runs_and_is_killed_with_its_parent(tmp_path: Path) -> None:
    plan = plan_in(tmp_path, detect_runtime())
    argv = bwrap_argv(plan, ["/bin/sh", "-c", "ulimit -n; sleep 60"])  # prlimit is inside
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env={}, start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == str(plan.limits.open_files)
    os.killpg(proc.pid, 9)
    assert proc.wait(timeout=10) != 0


def test_mount_plan_works_for_an_ordinary_user() -> None:
    """bwrap with the same plan, started as uid 65534 (the daemon as a non-root user)."""
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root to switch user, and the system python3")
    base = Path(tempfile.mkdtemp(prefix="nanoclaw-user-"))
    try:
        os.chmod(base, 0o755)
        system = Runtime(mounts=(), python="/usr/bin/python3", masked=(), host=detect_host())
        plan = plan_in(base, system)
        subprocess.run(["chown", "-R", "65534:65534", str(base)], check=True)
        code = "import os; print(os.getuid(), os.listdir('/workspace'))"
        argv = bwrap_argv(plan, ["/usr/bin/python3", "-c", code])
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={},
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "1000 []"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


IMAGINED_RUNTIME = Runtime(
    mounts=(("/opt/py", "/runtime/python"),),
    python="/runtime/python/bin/python3",
    masked=("/runtime/python/lib/python3/site-packages",),
    host=Host((("/bin", "usr/bin"), ("/lib64", None)), nix_store=True, proc_masked=()),
    env=(("LD_LIBRARY_PATH", "/runtime/python/lib"),),
    prlimit="/usr/bin/prlimit",
    closure=Closure(
        binds=(
            ("/usr/lib/libc.so.6.real", "/lib/libc.so.6"),
            ("/usr/bin/prlimit", "/usr/bin/prlimit"),
        ),
        masked=("/usr/lib/python3/site",),
    ),
)
ENV = NixMount(f"{NIX_STORE}/aaa-env", (f"{NIX_STORE}/aaa-env", f"{NIX_STORE}/bbb-jq"))


def nowhere_plan(runtime: Runtime, nix: NixMount | None) -> SandboxPlan:
    return plan_at(Path("/nonexistent-nanoclaw-host"), runtime, nix=nix)


def triples(argv: list[str]) -> set[tuple[str, ...]]:
    return {tuple(argv[i : i + 3]) for i in range(len(argv) - 2)}


def setenv(argv: list[str]) -> dict[str, str]:
    return {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}


def test_env_plan_mounts_the_closure_and_nothing_of_the_host_root() -> None:
    argv = bwrap_argv(nowhere_plan(IMAGINED_RUNTIME, ENV), ["/bin/true"])
    t = triples(argv)
    sources = {argv[i + 1] for i, a in enumerate(argv) if a.startswith("--ro-bind")}
    assert not sources & {"/usr", "/bin", "/lib", "/lib64", "/sbin", NIX_STORE}
    assert not any(
        a == "--symlink" and argv[i + 2] in ("/bin", "/lib64") for i, a in enumerate(argv)
    )
    for path in ENV.closure:
        assert ("--ro-bind", path, path) in t
    assert ("--ro-bind", ENV.env, "/env") in t
    assert ("--ro-bind", "/usr/lib/libc.so.6.real", "/lib/libc.so.6") in t
    assert ("--ro-bind", "/opt/py", "/runtime/python") in t
    for masked in ("/runtime/python/lib/python3/site-packages", "/usr/lib/python3/site"):
        assert ("--tmpfs", masked, "--remount-ro") in t
    for link, name in ENV_LINKS:
        assert ("--symlink", f"/env/bin/{name}", link) in t
    env = setenv(argv)
    assert env["PATH"] == ENV_PATH == "/env/bin"
    assert "SSL_CERT_FILE" not in env
    # the runtime's libpython is bound where its RUNPATH looks: env programs keep their own
    assert "LD_LIBRARY_PATH" not in env
    assert argv[argv.index("--chdir") + 3] == "/usr/bin/prlimit"


def test_env_plan_points_tls_at_the_envs_bundle() -> None:
    bundle = "/env/etc/ssl/certs/ca-bundle.crt"
    env = setenv(
        bwrap_argv(nowhere_plan(IMAGINED_RUNTIME, replace(ENV, cert_file=bundle)), ["true"])
    )
    assert env["SSL_CERT_FILE"] == env["NIX_SSL_CERT_FILE"] == bundle


def test_host_mode_is_untouched_by_a_closure() -> None:
    """A runtime that knows its closure changes nothing for a group with no environment."""
    plain = replace(IMAGINED_RUNTIME, closure=None)
    assert bwrap_argv(nowhere_plan(IMAGINED_RUNTIME, None), ["x"]) == bwrap_argv(
        nowhere_plan(plain, None), ["x"]
    )
    env = setenv(bwrap_argv(nowhere_plan(plain, None), ["x"]))
    assert env["PATH"].startswith("/usr/local")
    assert env["LD_LIBRARY_PATH"] == "/runtime/python/lib"


def test_a_runtime_without_runpath_keeps_its_library_path() -> None:
    closure = replace(IMAGINED_RUNTIME.closure or Closure(()), env=IMAGINED_RUNTIME.env)
    argv = bwrap_argv(nowhere_plan(replace(IMAGINED_RUNTIME, closure=closure), ENV), ["x"])
    assert setenv(argv)["LD_LIBRARY_PATH"] == "/runtime/python/lib"


def test_env_plan_needs_the_runtimes_closure() -> None:
    with pytest.raises(ValueError, match="closure"):
        bwrap_argv(nowhere_plan(replace(IMAGINED_RUNTIME, closure=None), ENV), ["/bin/true"])


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/etc",
        "/nix/store",
        f"{NIX_STORE}/aaa-env/bin",
        f"{NIX_STORE}/../../etc",
        "nix/store/aaa",
    ],
)
def test_a_closure_holds_store_paths_only(path: str) -> None:
    with pytest.raises(ValueError, match="not a Nix store path"):
        NixMount(f"{NIX_STORE}/aaa-env", (f"{NIX_STORE}/aaa-env", path))
    with pytest.raises(ValueError, match="not a Nix store path"):
        NixMount(path, ())


def test_parse_ldd() -> None:
    text = (
        "/usr/bin/python3.11:\n"
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f28)\n"
        "\tlibgone.so.1 => not found\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f28)\n"
        "/usr/lib/python3.11/lib-dynload/_bisect.so:\n"
        "\tstatically linked\n"
        "/x/_ssl.so:\n"
        "\tlibssl.so.3 => /nix/store/aaa-openssl/lib/libssl.so.3 (0x00007f28)\n"
        "\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f28)\n"
    )
    assert parse_ldd(text) == (
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/ld-linux-x86-64.so.2",
        "/nix/store/aaa-openssl/lib/libssl.so.3",
    )
