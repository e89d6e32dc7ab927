"""A group's Nix environment as its runs use it: built at the first run (the chat told
once), mounted at /env for the agent's tools; a name nixpkgs lacks fails the run with one
line in the chat and never falls back to the host's tools. Real Nix (the stub nixpkgs),
real bwrap, the real runner, `nanoclaw chat` as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import cli_env
from fake_anthropic import FakeAnthropic
from nixhome import need_nix, nix_settings

from nanoclaw.sandbox.launcher import PREPARING


def nanoclaw(
    home: Path, fake: FakeAnthropic, *args: str, text: str = ""
) -> subprocess.CompletedProcess[str]:
    env = cli_env(
        home,
        ANTHROPIC_BASE_URL=fake.base_url,
        AGENT_IDLE_TIMEOUT_S="5",
        POLL_INTERVAL_MS="50",
        **nix_settings(),
    )
    return subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", *args],
        input=text,
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_first_run_builds_the_environment_and_the_agent_uses_only_its_tools(
    home: Path, fake: FakeAnthropic
) -> None:
    need_nix()
    typo = nanoclaw(home, fake, "groups", "set", "main", "packages=jqq")
    assert typo.returncode == 0, typo.stderr  # the wish is recorded; Nix judges at the run
    proc = nanoclaw(home, fake, "chat", text="@Andy [[bash: jq hi]]\n")
    assert proc.returncode == 1, proc.stderr  # no answer: the note says why
    assert "jqq (did you mean jq?)" in proc.stdout  # told in the chat, in one line
    assert "no reply arrived" not in proc.stderr
    assert fake.requests == []  # the run never started: no host tools instead

    fixed = nanoclaw(home, fake, "groups", "set", "main", "packages=jq")
    assert fixed.returncode == 0, fixed.stderr
    script = "jq hi; readlink -f $(command -v jq); echo PATH=$PATH; ls /usr/bin"
    proc = nanoclaw(home, fake, "chat", text=f"@Andy [[bash: {script}]]\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(PREPARING) == 1
    assert "jq from jq-stub: hi" in proc.stdout
    assert "/nix/store/" in proc.stdout and "-jq-stub/bin/jq" in proc.stdout
    assert "PATH=/env/bin\n" in proc.stdout
    assert "python3\n" not in proc.stdout and "perl" not in proc.stdout  # no host /usr/bin

    again = nanoclaw(home, fake, "chat", text="@Andy [[bash: jq again]]\n")
    assert again.returncode == 0, again.stderr
    assert "jq from jq-stub: again" in again.stdout
    assert PREPARING not in again.stdout  # built: nothing to prepare, nothing said
