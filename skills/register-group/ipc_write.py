"""Write one IPC request for the nanoclaw host, atomically.

Usage: ipc_write.py [--dir DIR] [JSON]   (JSON on argv, or on stdin when omitted or "-")
The object is checked, written to DIR/.<name>.tmp and renamed to DIR/<unix-ms>-<random>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DIR = "/ipc/outbound"
FOLDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CHAT_RE = re.compile(r"^(tg|xmpp|mx|term):\S+$")

# type -> fields that must be present (SPEC section 6); the host re-checks everything.
REQUIRED: dict[str, tuple[str, ...]] = {
    "send_message": ("text",),
    "send_file": ("path",),
    "update_memory": ("content",),
    "write_file": ("target", "path", "content"),
    "schedule_task": ("prompt", "schedule"),
    "update_task": ("task_id",),
    "pause_task": ("task_id",),
    "resume_task": ("task_id",),
    "cancel_task": ("task_id",),
    "register_group": ("chat", "folder"),
}


def validate(obj: Any) -> list[str]:
    """Return the problems with a request; an empty list means it may be sent."""
    if not isinstance(obj, dict):
        return ["the request must be a JSON object"]
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        return ['missing "type" (a string such as "send_message" or "register_group")']
    if kind not in REQUIRED:
        return [f'unknown type "{kind}"; known: {", ".join(sorted(REQUIRED))}']
    problems = [f'{kind} needs field "{f}"' for f in REQUIRED[kind] if f not in obj]
    chat = obj.get("chat")
    if chat is not None and not (isinstance(chat, str) and CHAT_RE.match(chat)):
        problems.append('"chat" must look like tg:-100…, xmpp:room@host, mx:!id:host or term:name')
    if kind == "register_group" and "folder" in obj:
        folder = obj["folder"]
        if not isinstance(folder, str) or not FOLDER_RE.match(folder) or folder == "global":
            problems.append('"folder" must match ^[a-z0-9][a-z0-9_-]{0,63}$ and not be "global"')
    if "requires_trigger" in obj and not isinstance(obj["requires_trigger"], bool):
        problems.append('"requires_trigger" must be true or false')
    return problems


def write_atomically(obj: dict[str, Any], directory: Path) -> Path:
    """Write obj as <unix-ms>-<random>.json in directory via a hidden temp file and rename."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns() // 1_000_000}-{secrets.token_hex(6)}.json"
    tmp = directory / f".{name}.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    final = directory / name
    os.replace(tmp, final)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", default="-", help='the request; "-" or omitted: stdin')
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"target directory ({DEFAULT_DIR})")
    args = parser.parse_args(argv)
    raw = sys.stdin.read() if args.json == "-" else args.json
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"ipc_write: not valid JSON: {exc}", file=sys.stderr)
        return 2
    problems = validate(obj)
    if problems:
        for problem in problems:
            print(f"ipc_write: {problem}", file=sys.stderr)
        return 2
    print(write_atomically(obj, Path(args.dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
