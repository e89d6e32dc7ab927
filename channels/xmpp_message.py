"""XMPP stanzas to nanoclaw's decisions, as pure functions over plain values.

What to ignore (errors, our own echoes, replayed room history, carbons), who a sender
is (a bare JID, or an untrusted room/nick), and whether the bot's nick was addressed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Seen:
    """The parts of a message stanza the channel decides on."""

    kind: str  # chat | normal | groupchat | error | headline
    from_bare: str
    from_resource: str
    body: str
    delayed: bool
    real_jid: str = ""  # an occupant's real bare JID, when the room reveals it
    urls: tuple[str, ...] = ()  # shared links (XEP-0066 out-of-band data)


def ignore_reason(seen: Seen, own_bare: str, own_nick: str, rooms: set[str]) -> str | None:
    """Why this stanza must not reach the store, or None to keep it."""
    if seen.kind == "error":
        return "error stanza"
    if seen.kind == "headline":
        return "headline"
    if not seen.body.strip() and not seen.urls:
        return "no body (chat state, receipt or subject)"
    if seen.from_bare == own_bare:
        return "from our own account"
    if seen.kind == "groupchat":
        if seen.from_bare not in rooms:
            return "groupchat from a room we are not in"
        if seen.delayed:
            return "room history replayed on join"
        if not seen.from_resource:
            return "message from the room itself"
        if seen.from_resource == own_nick or seen.real_jid == own_bare:
            return "our own message reflected by the room"
    return None


def sender_of(seen: Seen, rooms: set[str]) -> tuple[str, str]:
    """(sender id, display name). In a room only a real JID is an identity; a nick is not.

    A room/nick sender id can never match ALLOWED_SENDERS, which holds bare JIDs only.
    This covers private messages through a room too.
    """
    if seen.real_jid:
        return f"xmpp:{seen.real_jid}", seen.from_resource or seen.real_jid
    if seen.kind == "groupchat" or seen.from_bare in rooms:
        return f"xmpp:{seen.from_bare}/{seen.from_resource}", seen.from_resource
    return f"xmpp:{seen.from_bare}", seen.from_bare.split("@", 1)[0]


def addressed(body: str, nick: str) -> bool:
    """ "Andy: ..." or "Andy, ..." (any case) addresses the bot in a room."""
    return bool(re.match(rf"^\s*{re.escape(nick)}\s*[:,]", body, re.IGNORECASE))


def sender_domain(seen: Seen, rooms: set[str]) -> str:
    """The sender's own server, when known: a room occupant's only if the room reveals it."""
    if seen.real_jid:
        return seen.real_jid.rsplit("@", 1)[-1]
    if seen.kind == "groupchat" or seen.from_bare in rooms:
        return ""
    return seen.from_bare.rsplit("@", 1)[-1]


def bare(jid: str) -> str:
    return jid.split("/", 1)[0].lower()
