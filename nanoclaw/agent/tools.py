"""The agent's tools and their JSON schemas: bash, files under /workspace, messages, memory,
files for the chat or the owner's export targets; the task tools come from `tasktools`.

Each tool returns text for the model; a failure is text too ("error: ..."), so one bad
call never ends the run. Outputs are capped so a noisy command cannot flood the context.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, get_args

from .protocol import Encoding, request
from .tasktools import TASK_TOOL_SPECS, TaskTools

OUTPUT_CAP = 30_000
SANDBOX_WORKSPACE = PurePosixPath("/workspace")
ENCODINGS: tuple[Encoding, ...] = get_args(Encoding)


def _schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


S = {"type": "string"}
TOOL_SPECS: list[dict[str, Any]] = [
    {
        "name": "bash",
        "description": "Run a bash command in /workspace (the group's folder). Network is off "
        "unless the group allows it. Returns exit code, stdout and stderr.",
        "input_schema": _schema({"command": S}, ["command"]),
    },
    {
        "name": "read_file",
        "description": "Read a text file (relative paths are under /workspace). "
        "Optional 1-based line offset and line limit.",
        "input_schema": _schema(
            {"path": S, "offset": {"type": "integer"}, "limit": {"type": "integer"}}, ["path"]
        ),
    },
    {
        "name": "write_file",
        "description": "Create or overwrite a file (relative paths are under /workspace).",
        "input_schema": _schema({"path": S, "content": S}, ["path", "content"]),
    },
    {
        "name": "edit_file",
        "description": "Replace old_text by new_text in a file; old_text must occur exactly "
        "once unless replace_all is true.",
        "input_schema": _schema(
            {"path": S, "old_text": S, "new_text": S, "replace_all": {"type": "boolean"}},
            ["path", "old_text", "new_text"],
        ),
    },
    {
        "name": "send_message",
        "description": "Send a message to the chat now, before your final answer "
        "(progress on long work). Your final answer is sent anyway.",
        "input_schema": _schema({"text": S}, ["text"]),
    },
    {
        "name": "update_memory",
        "description": "Remember something durable for this group: appended to the agent "
        "memory section of CLAUDE.md, read at every run.",
        "input_schema": _schema({"content": S}, ["content"]),
    },
    {
        "name": "send_file",
        "description": "Upload a file from /workspace to the chat (where the chat supports "
        "files), with an optional caption.",
        "input_schema": _schema({"path": S, "caption": S}, ["path"]),
    },
    {
        "name": "export_file",
        "description": "Write a file outside the sandbox, into an export target the owner "
        "declared for this group (by name); path is relative inside the target. Use "
        "encoding base64 for binary content.",
        "input_schema": _schema(
            {
                "target": S,
                "path": S,
                "content": S,
                "encoding": {"type": "string", "enum": list(ENCODINGS)},
            },
            ["target", "path", "content"],
        ),
    },
    *TASK_TOOL_SPECS,
]


def cap(text: str, limit: int = OUTPUT_CAP) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


def inside(path: str) -> str | None:
    """`path` made relative and normal if it stays inside its root, else None."""
    norm = posixpath.normpath(path)
    if norm in (".", "..") or norm.startswith(("../", "/")):
        return None
    return norm


def decoded_size(content: str, encoding: str | None) -> int | None:
    if encoding == "base64":
        try:
            return len(base64.b64decode(content, validate=True))
        except (binascii.Error, ValueError):
            return None
    return len(content.encode("utf-8"))


@dataclass
class Toolbox(TaskTools):
    """The tools over one sandbox: `workspace` is /workspace, `ipc` is /ipc."""

    workspace: Path
    send: Callable[[dict[str, Any]], str]
    bash_timeout_s: float = 300.0
    ipc: Path = Path("/ipc")
    confirm_s: float = 3.0

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.workspace / p

    def run(self, name: str, args: dict[str, Any]) -> str:
        handler = getattr(self, f"tool_{name}", None)
        if handler is None:
            return f"error: unknown tool {name!r}"
        try:
            return str(handler(**args))
        except TypeError as exc:
            return f"error: bad input for {name}: {exc}"
        except OSError as exc:
            return f"error: {exc.strerror or exc} ({exc.filename or ''})"

    def tool_bash(self, command: str) -> str:
        try:
            proc = subprocess.run(
                ["/bin/bash", "-c", command],
                cwd=self.workspace,
                capture_output=True,
                timeout=self.bash_timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return f"error: command timed out after {self.bash_timeout_s:.0f}s"
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        body = out + (f"\n[stderr]\n{err}" if err else "")
        return cap(f"exit code {proc.returncode}\n{body}")

    def tool_read_file(self, path: str, offset: int = 1, limit: int = 2000) -> str:
        lines = self.resolve(path).read_text(encoding="utf-8", errors="replace").splitlines()
        start = max(offset, 1) - 1
        chunk = lines[start : start + max(limit, 1)]
        more = len(lines) - start - len(chunk)
        text = "\n".join(f"{start + i + 1:6}\t{line}" for i, line in enumerate(chunk))
        return cap(text + (f"\n[{more} more lines]" if more > 0 else ""))

    def tool_write_file(self, path: str, content: str) -> str:
        target = self.resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        return f"wrote {len(content)} characters to {target}"

    def tool_edit_file(
        self, path: str, old_text: str, new_text: str, replace_all: bool = False
    ) -> str:
        target = self.resolve(path)
        text = target.read_text(encoding="utf-8")
        count = text.count(old_text)
        if count == 0:
            return "error: old_text not found"
        if count > 1 and not replace_all:
            return f"error: old_text occurs {count} times; give more context or replace_all"
        target.write_text(text.replace(old_text, new_text), encoding="utf-8")
        return f"replaced {count if replace_all else 1} occurrence(s) in {target}"

    def tool_send_message(self, text: str) -> str:
        self.send(request("send_message", text=text))
        return "sent"

    def tool_update_memory(self, content: str) -> str:
        self.send(request("update_memory", content=content))
        return "saved to memory"

    def tool_send_file(self, path: str, caption: str | None = None) -> str:
        given = PurePosixPath(path)
        for root in (SANDBOX_WORKSPACE, PurePosixPath(self.workspace)):
            if given.is_relative_to(root):
                given = given.relative_to(root)
                break
        rel = inside(str(given))
        if rel is None:
            return "error: send_file takes a file under /workspace"
        local = self.workspace / rel
        if not local.resolve().is_relative_to(self.workspace.resolve()):
            return f"error: /workspace/{rel} leads outside /workspace"
        if not local.is_file():
            return f"error: no file /workspace/{rel}"
        payload = request("send_file", path=str(SANDBOX_WORKSPACE / rel))
        if caption:
            payload["caption"] = caption
        self.send(payload)
        return f"sending /workspace/{rel} to the chat"

    def tool_export_file(
        self, target: str, path: str, content: str, encoding: str | None = None
    ) -> str:
        if not isinstance(target, str) or not target.strip():
            return "error: target must be the name of an export target"
        rel = inside(path) if isinstance(path, str) else None
        if rel is None:
            return "error: path must be relative and stay inside the target"
        if not isinstance(content, str):
            return "error: content must be a string"
        if encoding is not None and encoding not in ENCODINGS:
            return "error: encoding must be utf-8 or base64"
        size = decoded_size(content, encoding)
        if size is None:
            return "error: content is not valid base64"
        payload = request("write_file", target=target, path=rel, content=content)
        if encoding is not None:
            payload["encoding"] = encoding
        self.send(payload)
        return (
            f"asked the host to write {size} bytes to {rel} in export target {target!r} "
            "(done only if it is one of this group's export targets)"
        )
