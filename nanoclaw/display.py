"""Text from outside (chats, agents, platforms) made safe to show a person.

`printable()` is for the terminal: escape sequences and control characters go, newline and
tab stay. `escaped()` and `LogFormatter` are for logs: one record stays one line.
"""

from __future__ import annotations

import logging
import re

# Terminated control strings (OSC, DCS, SOS, PM, APC; 7- and 8-bit forms), CSI sequences,
# then the other two-byte escapes. An unterminated string keeps its payload visible: only
# its introducer goes, as the control characters do below.
ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|\x1b[ -/]*[0-~]"
)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but \t and \n, DEL, C1
LOG_ESCAPES = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09},
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def printable(text: str) -> str:
    """`text` with no escape sequence nor control character left but newline and tab.

    What a terminal would act on (an OSC 52 clipboard write, a title change, cursor
    moves, a carriage return over the line) is dropped, not shown.
    """
    return CONTROL.sub("", ESCAPE_SEQUENCE.sub("", text))


def printable_line(text: str) -> str:
    """`printable(text)` on one line, for a row of a listing."""
    return printable(text).replace("\n", " ").replace("\t", " ")


def escaped(text: str) -> str:
    """`text` on one line: newlines, other control characters and line separators as escapes."""
    return text.translate(LOG_ESCAPES)


class LogFormatter(logging.Formatter):
    """Escapes the formatted line, whatever its arguments held; the traceback after it is
    the daemon's own and kept as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escaped(super().formatMessage(record))
