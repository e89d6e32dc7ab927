"""The runner's side of vision (nanoclaw.agent.vision): the host's trailer taken off the
prompt, only inbox paths accepted, files sniffed and bounded, no base64 kept in history."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from nanoclaw.agent import vision

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def test_the_trailer_is_taken_off_and_its_paths_checked() -> None:
    prompt = "<messages>x</messages>" + vision.images_line(
        ["inbox/d/a.png", "inbox/../x", "/etc/p"]
    )
    text, paths = vision.split_images(prompt)
    assert (text, paths) == ("<messages>x</messages>", ["inbox/d/a.png"])
    assert vision.split_images("no trailer") == ("no trailer", [])
    mid = 'a\n\n<images>["inbox/a.png"]</images>\nmore'  # not at the end: not the host's
    assert vision.split_images(mid) == (mid, [])


@pytest.mark.parametrize("path", ["inbox/a.png", "inbox/2026-12-03/b c.jpg"])
def test_safe_paths(path: str) -> None:
    assert vision.safe_path(path)


@pytest.mark.parametrize(
    "path", ["", "inbox", "inbox/", "x/inbox/a", "inbox/../a", "inbox//a", "inbox/./a"]
)
def test_unsafe_paths(path: str) -> None:
    assert not vision.safe_path(path)


def test_follow_ups_keep_each_items_images() -> None:
    one = "first" + vision.images_line(["inbox/d/1.png"])
    two = "second" + vision.images_line(["inbox/d/2.png"])
    assert vision.split_images(vision.joined([one, "plain", two])) == (
        "first\n\nplain\n\nsecond",
        ["inbox/d/1.png", "inbox/d/2.png"],
    )


def test_image_blocks_sniff_refuse_links_and_keep_to_the_budget(tmp_path: Path) -> None:
    day = tmp_path / "inbox" / "d"
    day.mkdir(parents=True)
    (day / "ok.png").write_bytes(PNG)
    (day / "text.png").write_bytes(b"hello")
    (tmp_path / "secret.png").write_bytes(PNG)
    os.symlink(tmp_path / "secret.png", day / "link.png")
    (day / "huge.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * (vision.REQUEST_BUDGET - 10))
    blocks = vision.image_blocks(
        tmp_path, ["inbox/d/ok.png", "inbox/d/text.png", "inbox/d/link.png", "inbox/d/huge.jpg"]
    )
    images = [b for b in blocks if b["type"] == "image"]
    assert [base64.b64decode(b["source"]["data"]) for b in images] == [PNG]
    notes = [b["text"] for b in blocks if b["type"] == "text"]
    assert (
        notes[1]
        == "[image /workspace/inbox/d/text.png not shown: not a JPEG, PNG, GIF or WebP image]"
    )
    assert notes[2].startswith("[image /workspace/inbox/d/link.png not shown: cannot open it")
    assert notes[3].endswith("not shown: this request has no room left for it]")


def test_history_keeps_no_image_block() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "old"},
        {"role": "user", "content": [image, {"type": "text", "text": "now"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "tool_result"}, image]},
    ]
    kept = vision.without_images(messages, 1, "now")
    assert kept[0] == messages[0] and kept[1] == {"role": "user", "content": "now"}
    assert kept[3]["content"] == [{"type": "tool_result"}]
