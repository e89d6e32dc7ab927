"""Pairing codes, as pure rules: how a code looks, what counts as an attempt, the limits.

`nanoclaw pair GROUP` makes a code; a person sends it to the bot from a chat, and the
chat joins GROUP with that person allowed. The store (pairbook) keeps codes and counts.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from nanoclaw.settingvalues import SENDER_RE

# 31 symbols: no 0/O, 1/I/l, so a code read aloud or off a screen is typed right. Eight of
# them make 31**8 = 852,891,037,441 codes: with at most MAX_LIVE live codes and
# ATTEMPTS_PER_HOUR guesses per chat, even 10,000 chats guessing for an hour (50,000 guesses)
# hit one with a chance of about 3 in 10 million, and a code lives 10 minutes.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LEN = 8
TTL_MS = 10 * 60_000
MAX_LIVE = 5
ATTEMPTS_PER_HOUR = 5
HOUR_MS = 3_600_000
# `pair` and one code-shaped word: "pair programming is fun" is a sentence, not an attempt
_EXPLICIT = re.compile(r"\s*/?pair(?:@\w+)?\s+([a-z0-9]{4}[- ]?[a-z0-9]{4})\s*", re.IGNORECASE)

# what the inbound step does with a message that may hold a code
Step = Literal["check", "pass", "refuse"]


@dataclass(frozen=True)
class Attempt:
    """A message that may hold a code. `code` is normalised, or None when it cannot be one;
    `explicit` when the sender wrote `pair CODE` (or `/pair CODE`), not a bare code."""

    code: str | None
    explicit: bool


def new_code(choice: Callable[[str], str] = secrets.choice) -> str:
    """A fresh code like K7QX-M3PD: letters and digits both, so no word is ever one."""
    while True:
        code = "".join(choice(ALPHABET) for _ in range(CODE_LEN))
        if _mixed(code):
            return f"{code[:4]}-{code[4:]}"


def _mixed(code: str) -> bool:
    return any(c.isdigit() for c in code) and any(c.isalpha() for c in code)


def normalise_code(text: str) -> str | None:
    """The 8 symbols of a code as typed ("k7qx m3pd", "K7QX-M3PD"), or None if it is none."""
    code = text.strip().upper()
    if len(code) == CODE_LEN + 1 and code[4] in "- ":
        code = code[:4] + code[5:]
    if len(code) != CODE_LEN or any(c not in ALPHABET for c in code):
        return None
    return code


def code_hash(code: str) -> str:
    """What the store keeps: the code itself never lands in the database file."""
    return hashlib.sha256(f"nanoclaw-pair:{code}".encode()).hexdigest()


def parse(text: str) -> Attempt | None:
    """An attempt when the whole message is `pair CODE`, `/pair CODE` or a bare code.

    A bare code must mix letters and digits as every issued code does, so that an ordinary
    eight-letter word ("whatever") is never taken for a wrong code.
    """
    if len(text) > 100:
        return None
    explicit = _EXPLICIT.fullmatch(text)
    if explicit is not None:
        return Attempt(normalise_code(explicit.group(1)), explicit=True)
    code = normalise_code(text)
    if code is None or not _mixed(code):
        return None
    return Attempt(code, explicit=False)


def step(attempt: Attempt, served: bool, codes_live: bool, recent_attempts: int) -> Step:
    """Check the code, pass the message on as an ordinary one, or refuse it unchecked.

    In a chat the bot already serves, a bare code-like message is only taken for a code
    while one is live; otherwise it is someone's ordinary message (an order number...).
    """
    if not attempt.explicit and served and not codes_live:
        return "pass"
    if recent_attempts >= ATTEMPTS_PER_HOUR:
        return "pass" if not attempt.explicit and served else "refuse"
    return "check"


def pairable_sender(sender_id: str) -> bool:
    """Whether a sender id can be allowed: a room nick (xmpp:room@muc/nick) is nobody's."""
    if not SENDER_RE.match(sender_id):
        return False
    return not (sender_id.startswith("xmpp:") and "/" in sender_id)


def sender_allowed(sender_id: str, global_allowed: Sequence[str], group: Sequence[str]) -> bool:
    return sender_id in global_allowed or sender_id in group


# what the person is told; the host answers, never the model

WRONG = "That code is not valid (wrong, used or expired). Ask the owner for a new one."


def paired_text(folder: str, sender_id: str, trigger: str | None) -> str:
    wake = f"start a message with {trigger} to wake me" if trigger else "just write to me"
    return f"Paired: this chat now talks to group {folder}, and you ({sender_id}) may {wake}."


def held_text(holder: str) -> str:
    return (
        f"This chat already talks to group {holder}. The owner can move it with "
        f"`nanoclaw groups add GROUP --chat CHAT --move`; the code is still unused."
    )


def nobody_text(chat_id: str) -> str:
    return (
        f"I cannot tell who you are in {chat_id} (a room nick is not an address): send me "
        "the code in a one-to-one chat; it is still unused."
    )


def hint_text(assistant: str, chat_id: str, sender_id: str) -> str:
    return (
        f"Hi, I'm {assistant}. I don't take requests from you here yet. To change that, ask "
        "my owner for a pairing code (they run `nanoclaw pair GROUP`) and send me the code "
        f"here. (This chat is {chat_id}; you are {sender_id}.)"
    )
