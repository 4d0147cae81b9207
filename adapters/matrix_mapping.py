"""Matrix event content → engine values: rooms, threads, triggers, rights and readable text.

Plain functions of event content (the JSON dicts the homeserver sends) and a few facts about
the room, so every rule is tested without a client or a network, the way matrix-nio keeps its
no-I/O ``Client`` apart from the ``AsyncClient`` that talks to the server.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Container, Iterable, Mapping
from typing import Any

from engine.types import RoomRef

PLATFORM = "matrix"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".json", ".yaml", ".yml", ".csv", ".log")


def server_of(user_id: str) -> str:
    """``example.org`` for ``@alice:example.org`` (the server part may carry a port)."""
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def relation(content: Mapping[str, Any]) -> Mapping[str, Any]:
    relates = content.get("m.relates_to")
    return relates if isinstance(relates, Mapping) else {}


def thread_root(content: Mapping[str, Any]) -> str | None:
    """The thread an event belongs to (``m.thread`` relation), or None in the main timeline."""
    relates = relation(content)
    if relates.get("rel_type") == "m.thread" and isinstance(relates.get("event_id"), str):
        return relates["event_id"]
    return None


def room_for(room_id: str, content: Mapping[str, Any]) -> RoomRef:
    """A room is a conversation; each thread in it is a conversation of its own."""
    return RoomRef(PLATFORM, room_id, thread_root(content))


def replied_to(content: Mapping[str, Any]) -> str | None:
    """The event this one answers (``m.in_reply_to``), including a thread's fallback reply."""
    in_reply = relation(content).get("m.in_reply_to")
    if isinstance(in_reply, Mapping) and isinstance(in_reply.get("event_id"), str):
        return in_reply["event_id"]
    return None


def answered_event(content: Mapping[str, Any]) -> str | None:
    """The event a user chose to reply to: ``replied_to`` minus a thread's automatic fallback
    (``is_falling_back``), which only points at the thread's latest event."""
    return None if relation(content).get("is_falling_back") is True else replied_to(content)


def edit_target(content: Mapping[str, Any]) -> str | None:
    """The event an ``m.replace`` edit changes, or None for a new message."""
    relates = relation(content)
    if relates.get("rel_type") == "m.replace" and isinstance(relates.get("event_id"), str):
        return relates["event_id"]
    return None


def strip_reply_fallback(body: str) -> str:
    """Drop the ``> <@user> quoted`` lines clients put before a reply's own text."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and lines[index] == "":
        index += 1
    return "\n".join(lines[index:])


def _name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w@]){re.escape(name)}(?![\w])", re.IGNORECASE)


def mentions_user(content: Mapping[str, Any], body: str, user_id: str, display_name: str | None) -> bool:
    """An intentional mention: ``m.mentions.user_ids``, or the id or display name written in the body.

    ``@room`` is not a mention of the bot: it would make the bot answer every announcement.
    """
    mentions = content.get("m.mentions")
    if isinstance(mentions, Mapping):
        user_ids = mentions.get("user_ids")
        if isinstance(user_ids, list) and user_id in user_ids:
            return True
    if user_id and user_id.lower() in body.lower():
        return True
    return bool(display_name and len(display_name) >= 2 and _name_pattern(display_name).search(body))


def readable_text(body: str, content: Mapping[str, Any], user_id: str, display_name: str | None) -> str:
    """The message as the model should read it: no reply fallback, no leading address to the bot."""
    text = strip_reply_fallback(body) if replied_to(content) else body
    for name in (user_id, display_name):
        if name:
            text = re.sub(rf"^\s*{re.escape(name)}\s*[:,]?\s*", "", text, flags=re.IGNORECASE)
    text = text.replace(user_id, "").strip() if user_id else text.strip()
    return re.sub(r"[ \t]{2,}", " ", text)


def is_addressed(
    content: Mapping[str, Any],
    body: str,
    *,
    user_id: str,
    display_name: str | None,
    member_count: int,
    own_event_ids: Container[str] = (),
) -> bool:
    """The platform trigger: a mention, a reply to one of the bot's events, or any message in a DM.

    Wake words and per-room trigger modes are the engine's business. A thread's fallback
    reply points at the thread's latest event, so going on in a thread right after the bot
    answered counts as answering the bot.
    """
    if member_count <= 2:
        return True
    if mentions_user(content, body, user_id, display_name):
        return True
    target = replied_to(content)
    return target is not None and target in own_event_ids


def matches_any(user_id: str, patterns: Iterable[str]) -> bool:
    """Glob match of a user id (``@*:example.org``), case-insensitive."""
    lowered = user_id.lower()
    return any(pattern and fnmatch.fnmatchcase(lowered, pattern.strip().lower()) for pattern in patterns)


CREATOR_POWER = 2**53  # room version 12 and later: creators outrank every power level


def creators_privileged(room_version: str) -> bool:
    """Room versions 12+ give their creators unlimited power, outside the power-levels event."""
    return room_version.isdigit() and int(room_version) >= 12


def effective_power(user_id: str, level: int, creators: Container[str], room_version: str) -> int:
    """The user's power level, counting a v12+ creator's implicit power that nio does not model."""
    if user_id in creators and creators_privileged(room_version):
        return CREATOR_POWER
    return level


def creators_of(create_event: Mapping[str, Any]) -> frozenset[str]:
    """The sender of ``m.room.create`` plus its ``additional_creators``."""
    creators = {create_event.get("sender")}
    extra = create_event.get("content", {}).get("additional_creators")
    if isinstance(extra, list):
        creators.update(extra)
    return frozenset(c for c in creators if isinstance(c, str))


def is_operator(user_id: str, admins: Iterable[str]) -> bool:
    """Bot-wide rights: a user id matching a ``matrix.admins`` glob. Power in a room never counts:
    anyone can create a room and hold power 100 there."""
    return matches_any(user_id, admins)


def is_room_manager(power_level: int, admin_power_level: int) -> bool:
    """Rights in this room only: a power level of at least ``matrix.admin_power_level`` here."""
    return power_level >= admin_power_level


def inviter_allowed(inviter: str, allowed: Iterable[str], own_user_id: str) -> bool:
    """Invites are accepted from ``allowed`` globs; with none configured, from the bot's own server."""
    patterns = [p for p in allowed if p.strip()]
    if patterns:
        return matches_any(inviter, patterns)
    return bool(inviter) and server_of(inviter).lower() == server_of(own_user_id).lower()


def is_text_file(filename: str, mimetype: str | None) -> bool:
    mimetype = (mimetype or "").split(";")[0].strip().lower()
    return mimetype.startswith("text/") or filename.lower().endswith(TEXT_SUFFIXES)


__all__ = [
    "PLATFORM",
    "answered_event",
    "creators_of",
    "edit_target",
    "effective_power",
    "inviter_allowed",
    "is_addressed",
    "is_operator",
    "is_room_manager",
    "is_text_file",
    "matches_any",
    "mentions_user",
    "readable_text",
    "replied_to",
    "room_for",
    "server_of",
    "strip_reply_fallback",
    "thread_root",
]
