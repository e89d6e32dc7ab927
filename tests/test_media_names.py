"""Inbox file names (nanoclaw.media.names): whatever a sender calls a file, one safe component."""

from __future__ import annotations

import pytest

from nanoclaw.media.names import MAX_NAME_BYTES, numbered, sanitise, unique

HOSTILE = [
    "../../etc/passwd",
    "..",
    ".",
    "...",
    "/",
    "",
    "a/../../b.txt",
    "..\\..\\windows\\system32\\cmd.exe",
    "evil\x00.jpg",
    "line\nbreak\r.txt",
    "tab\there.png",
    "\x1b[31mred\x1b[0m.txt",
    "invoice\u202egnp.exe",  # RTL override: shows as "invoiceexe.png"
    "zero\u200bwidth\u2066.pdf",
    ".bashrc",
    ".hidden.jpg",
    "CON",
    "con.txt",
    "Lpt1.jpg",
    "nul",
    "x" * 1000 + ".jpg",
    "ü" * 300 + ".pdf",
    "name." + "e" * 40,
    'a:b*c?d"e<f>g|h.txt',
    "trailing dot. ",
    " \u3000 ",
    "\ud800broken.jpg",
    "\u2028sep\u2029.txt",
]


def safe(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and not name.endswith((".", " "))
        and len(name.encode("utf-8")) <= MAX_NAME_BYTES
        and all(c >= " " and c not in '\x7f\u202e\u200b\u2066\u2028\u2029:*?"<>|' for c in name)
        and name.split(".")[0].lower() not in {"con", "prn", "aux", "nul", "lpt1", "com1"}
    )


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("kind", ["image", "voice", "file"])
def test_every_hostile_name_becomes_one_safe_component(name: str, kind: str) -> None:
    got = sanitise(name, kind, "image/jpeg")  # type: ignore[arg-type]
    assert safe(got), repr(got)
    assert numbered(got, 7) != got and safe(numbered(got, 7))


def test_ordinary_names_are_kept() -> None:
    assert sanitise("report 2026.PDF", "file") == "report 2026.pdf"
    assert sanitise("Straße – Plan.txt", "file") == "Straße – Plan.txt"
    assert sanitise("../../etc/passwd", "file") == "passwd"
    assert sanitise("invoice\u202egnp.exe", "file") == "invoicegnp.exe"


def test_an_empty_name_gets_the_kind_and_the_mime_extension() -> None:
    assert sanitise("", "image", "image/png") == "photo.png"
    assert sanitise("...", "voice", "audio/ogg") == "voice.ogg"
    assert sanitise("", "file") == "file"
    assert sanitise("con", "file") == "_con"


def test_long_names_keep_their_extension() -> None:
    got = sanitise("x" * 1000 + ".jpeg", "image")
    assert got.endswith(".jpeg") and len(got.encode()) == MAX_NAME_BYTES


def test_unique_takes_the_first_free_variant() -> None:
    taken = {"photo.jpg", "photo-2.jpg"}
    assert unique("photo.jpg", taken.__contains__) == "photo-3.jpg"
    assert unique("README", {"README"}.__contains__) == "README-2"
    assert unique("a.jpg", lambda n: True, tries=5) is None
