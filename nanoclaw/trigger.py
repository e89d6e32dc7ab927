"""The trigger and allowlist rules of SPEC section 7, as pure functions.

Nothing reaches an agent unless `should_trigger` says so here, in code; the model is
never asked whether a sender may use it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

from nanoclaw.models import Group, Message

LOCAL_SENDER = "term:local"
# Characters that render as nothing; stripped before matching so "\u200b@Andy" cannot
# sneak past the start-of-message rule, and look-alikes are folded by NFKC.
INVISIBLE = dict.fromkeys(
    [
        0x200B,
        0x200C,
        0x200D,
        0x2060,
        0xFEFF,
        0x200E,
        0x200F,
        0x202A,
        0x202B,
        0x202C,
        0x202D,
        0x202E,
        0x2066,
        0x2067,
        0x2068,
        0x2069,
    ]
)


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(INVISIBLE).lstrip()


def sender_allowed(sender_id: str, global_allowed: Iterable[str], group: Group) -> bool:
    if sender_id == LOCAL_SENDER:
        return True
    return sender_id in set(global_allowed) or sender_id in group.allowed_senders


def starts_with_trigger(text: str, trigger: str) -> bool:
    """Case-insensitive, at the start, ending at a word boundary ("@Andy," yes, "@Andyx" no)."""
    head = normalise(text).casefold()
    word = normalise(trigger).casefold()
    if not word or not head.startswith(word):
        return False
    rest = head[len(word) :]
    return not rest or not (rest[0].isalnum() or rest[0] == "_")


def triggers(
    msg: Message, group: Group, global_allowed: Sequence[str], default_trigger: str
) -> bool:
    """Whether this one message may start (or feed) a run of the group's agent."""
    if not sender_allowed(msg.sender_id, global_allowed, group):
        return False
    if not group.requires_trigger:
        return True
    if msg.mentions_bot or msg.reply_to_bot:
        return True
    return starts_with_trigger(msg.text, group.trigger or default_trigger)


def any_trigger(
    msgs: Iterable[Message], group: Group, global_allowed: Sequence[str], default_trigger: str
) -> bool:
    return any(triggers(m, group, global_allowed, default_trigger) for m in msgs)
