"""The shipped templates: skills' front matter and scripts, group memory files, flake.nix.

The scripts run as real subprocesses with the test interpreter, as the agent would run them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKILLS = ROOT / "skills"
IPC_WRITE = SKILLS / "register-group" / "ipc_write.py"
TABLE = SKILLS / "data-wrangling" / "table.py"
IPC_NAME = re.compile(r"^\d{13}-[A-Za-z0-9_-]+\.json$")


def front_matter(text: str) -> dict[str, str]:
    """The `key: value` lines between the leading `---` fences (as the agent runner reads them)."""
    lines = text.splitlines()
    assert lines and lines[0] == "---", "SKILL.md must start with a --- line"
    end = lines.index("---", 1)
    fields: dict[str, str] = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(":")
        assert sep, f"front matter line without a colon: {line!r}"
        fields[key.strip()] = value.strip()
    return fields


def skill_dirs() -> list[Path]:
    return sorted(p.parent for p in SKILLS.glob("*/SKILL.md"))


def run(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_there_are_at_least_two_skills() -> None:
    assert len(skill_dirs()) >= 2


@pytest.mark.parametrize("skill", skill_dirs(), ids=lambda p: p.name)
def test_skill_front_matter_names_folder_and_says_when_to_use_it(skill: Path) -> None:
    fields = front_matter((skill / "SKILL.md").read_text(encoding="utf-8"))
    assert fields.get("name") == skill.name
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", skill.name)
    assert fields.get("description"), "description must be a non-empty single line"


def test_main_memory_ends_with_the_agent_marker_and_schedules_nothing() -> None:
    text = (ROOT / "groups" / "main" / "CLAUDE.md").read_text(encoding="utf-8")
    assert text.rstrip().endswith("<!-- agent memory -->")
    assert "## Scheduled Tasks" in text
    active = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    assert not re.search(r"^\s*#\s*Cron:", active, flags=re.MULTILINE | re.IGNORECASE)
    # The example is there, just commented out.
    assert re.search(r"^# Cron: ", text, flags=re.MULTILINE)


def test_global_memory_exists_and_says_who_writes_it() -> None:
    text = (ROOT / "groups" / "global" / "CLAUDE.md").read_text(encoding="utf-8")
    assert "main" in text and "every group" in text.lower()


def test_flake_parses() -> None:
    nix = shutil.which("nix-instantiate")
    if nix is None:
        pytest.skip("nix-instantiate not installed (apt-get install nix-bin)")
    result = subprocess.run(
        [nix, "--parse", str(ROOT / "flake.nix")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_ipc_write_writes_one_atomic_file_that_round_trips(tmp_path: Path) -> None:
    payload = {
        "type": "register_group",
        "chat": "xmpp:team@conference.example.org",
        "folder": "team_x",
        "requires_trigger": False,
        "trigger": "@Andy ✓",
    }
    result = run(IPC_WRITE, "--dir", tmp_path, json.dumps(payload))
    assert result.returncode == 0, result.stderr
    files = list(tmp_path.iterdir())
    assert len(files) == 1, files  # no temp file left behind
    assert IPC_NAME.match(files[0].name), files[0].name
    assert json.loads(files[0].read_text(encoding="utf-8")) == payload
    assert result.stdout.strip() == str(files[0])


def test_ipc_write_reads_stdin(tmp_path: Path) -> None:
    payload = {"type": "send_message", "chat": "mx:!abc:example.org", "text": 'say "hi"'}
    result = run(IPC_WRITE, "--dir", tmp_path, stdin=json.dumps(payload))
    assert result.returncode == 0, result.stderr
    (written,) = tmp_path.iterdir()
    assert json.loads(written.read_text(encoding="utf-8")) == payload


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "no type"},
        {"type": "launch_missiles"},
        {"type": "send_message"},
        {"type": "register_group", "chat": "tg:-1001", "folder": "global"},
        {"type": "register_group", "chat": "tg:-1001", "folder": "Bad Name"},
        {"type": "register_group", "chat": "-1001", "folder": "family"},
        ["type", "send_message"],
    ],
)
def test_ipc_write_rejects_bad_requests_and_writes_nothing(tmp_path: Path, payload: object) -> None:
    result = run(IPC_WRITE, "--dir", tmp_path, json.dumps(payload))
    assert result.returncode != 0
    assert result.stderr.strip()
    assert list(tmp_path.iterdir()) == []


CSV = "name,age,city\nalice,30,Paris\nbob,40,Berlin\ncarol,20,Paris\ndave,50,Rome\n"


def test_table_summarises_csv(tmp_path: Path) -> None:
    data = tmp_path / "people.csv"
    data.write_text(CSV, encoding="utf-8")
    result = run(TABLE, data)
    assert result.returncode == 0, result.stderr
    assert "4 rows" in result.stdout
    age = next(line for line in result.stdout.splitlines() if line.startswith("age "))
    assert "int" in age and "mean 35" in age and "min 20" in age and "max 50" in age
    city = next(line for line in result.stdout.splitlines() if line.startswith("city "))
    assert "Paris (2)" in city


def test_table_answers_sql(tmp_path: Path) -> None:
    data = tmp_path / "people.csv"
    data.write_text(CSV, encoding="utf-8")
    sql = "select city, count(*) as n, sum(age) as total from t group by city order by n desc, city"
    result = run(TABLE, data, "--sql", sql, "--csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "city,n,total",
        "Paris,2,50",
        "Berlin,1,40",
        "Rome,1,50",
    ]


def test_table_reads_json_lines_and_reports_bad_sql(tmp_path: Path) -> None:
    data = tmp_path / "events.jsonl"
    data.write_text('{"level": "ERROR", "ms": 3}\n{"level": "INFO", "ms": 4.5}\n', encoding="utf-8")
    result = run(TABLE, data, "--sql", "select level from t where ms > 4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["level", "INFO"]
    bad = run(TABLE, data, "--sql", "select nope from t")
    assert bad.returncode != 0 and "nope" in bad.stderr
