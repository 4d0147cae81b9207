"""Discord objects → engine values: rooms, authors, triggers, readable text and attachments.

This is the one place that knows discord.py's shapes. Everything here is a plain function of
its arguments (no client, no network except reading an attachment), so the rules can be tested
with real discord objects built by dpytest or by hand.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Container, Iterable, Mapping
from pathlib import PurePath
from typing import Any

import discord

from engine.types import Attachment, Author, RoomRef

log = logging.getLogger(__name__)

PLATFORM = "discord"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".json", ".yaml", ".yml", ".csv", ".log")
CARD_SUFFIXES = (".png", ".json", ".charx", ".yaml", ".yml")
MAX_TEXT_ATTACHMENT_BYTES = 64 * 1024  # a file read into the prompt; larger files would crowd out the history
MAX_CARD_BYTES = 20 * 1024 * 1024
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")


# -- rooms ---------------------------------------------------------------------------------


def room_for(channel: Any) -> RoomRef:
    """A channel is a room; a thread is its own room under its parent (room = parent, thread = thread).

    Keyed by ids only, so the same room comes out of a message, an interaction or a raw edit event.
    """
    if isinstance(channel, discord.Thread):
        return RoomRef(PLATFORM, str(channel.parent_id), str(channel.id))
    return RoomRef(PLATFORM, str(channel.id))


def room_for_channel_id(client: discord.Client, channel_id: int) -> RoomRef:
    """For raw events, which carry only a channel id: look the channel up so threads map like messages."""
    channel = client.get_channel(channel_id)
    if channel is None:
        for guild in client.guilds:
            channel = guild.get_thread(channel_id)
            if channel is not None:
                break
    return room_for(channel) if channel is not None else RoomRef(PLATFORM, str(channel_id))


def _channel_keys(channel: Any) -> set[str]:
    keys = {str(getattr(channel, "id", ""))}
    name = getattr(channel, "name", None)
    if name:
        keys.add(name.lower())
    return keys


def in_answer_channel(channel: Any, answer_channels: Iterable[str]) -> bool:
    """True if the channel (or a thread's parent channel) is configured to answer every message.

    Entries may be channel ids or names (``general`` or ``#general``).
    """
    wanted = {entry.strip().lstrip("#").lower() for entry in answer_channels if entry.strip()}
    if not wanted:
        return False
    keys = _channel_keys(channel)
    if isinstance(channel, discord.Thread):
        keys.add(str(channel.parent_id))
        if channel.parent is not None:
            keys |= _channel_keys(channel.parent)
    return bool(wanted & keys)


# -- authors and permissions ---------------------------------------------------------------


def _guild_permissions(user: Any) -> discord.Permissions | None:
    return getattr(user, "guild_permissions", None) if isinstance(user, discord.Member) else None


def is_operator(user: Any, operators: Container[str]) -> bool:
    """Bot-wide rights: by user id only (``discord.admin_users`` and the application's owners).

    No role or server permission ever counts: those belong to one guild, and an operator's
    commands change what every guild gets.
    """
    return str(user.id) in operators


def is_room_manager(user: Any, channel: Any, admin_roles: Iterable[str]) -> bool:
    """Rights in this channel: Manage Channels, Manage Server or Administrator in its guild,
    or a role listed in ``discord.admin_roles`` (by id or name). Threads inherit their parent's."""
    if not isinstance(user, discord.Member):
        return False  # a DM has no roles or server permissions
    wanted = {role.strip().lower() for role in admin_roles if role.strip()}
    if any(str(role.id) in wanted or role.name.lower() in wanted for role in user.roles):
        return True
    permissions = _guild_permissions(user)
    if permissions and (permissions.administrator or permissions.manage_guild):
        return True
    if isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        try:
            return channel.permissions_for(user).manage_channels
        except Exception:  # an uncached parent channel: fall back to the server-wide permission
            log.debug("could not resolve channel permissions for %s", user.id, exc_info=True)
    return bool(permissions and permissions.manage_channels)


def author_for(user: Any, channel: Any, operators: Container[str], admin_roles: Iterable[str]) -> Author:
    """The engine's view of a Discord user; rights are decided here, from ids, roles and permissions."""
    return Author(
        id=str(user.id),
        display_name=getattr(user, "display_name", None) or user.name,
        is_operator=is_operator(user, operators),
        is_room_manager=is_room_manager(user, channel, admin_roles),
        is_bot=bool(getattr(user, "bot", False)),
    )


# -- triggers and text ---------------------------------------------------------------------


def mentions_bot(message: discord.Message, bot_id: int) -> bool:
    """An explicit @mention of the bot or of its own managed role; @everyone does not count."""
    if any(user.id == bot_id for user in message.mentions):
        return True
    return any(role.tags is not None and role.tags.bot_id == bot_id for role in message.role_mentions)


def replies_to_bot(message: discord.Message, bot_id: int, own_message_ids: Container[int] = ()) -> bool:
    """A Discord reply whose referenced message the bot wrote."""
    reference = message.reference
    if reference is None or reference.message_id is None:
        return False
    resolved = reference.resolved
    if isinstance(resolved, discord.Message):
        return resolved.author.id == bot_id
    return reference.message_id in own_message_ids


def character_reply_name(
    message: discord.Message, webhook_ids: Container[int], character_messages: Mapping[int, str]
) -> str | None:
    """The character a reply answers: the name a hearth webhook message was sent under, or the
    character of a message the bot sent for one (``character_messages``: message id → name).

    A webhook message's author is the webhook, shown under the ``username`` it was sent with:
    that display name is the character's. None when the reply answers anything else.
    """
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    name = character_messages.get(reference.message_id)
    if name is not None:
        return name
    resolved = reference.resolved
    if isinstance(resolved, discord.Message) and resolved.webhook_id is not None and resolved.webhook_id in webhook_ids:
        return resolved.author.display_name
    return None


def is_addressed(
    message: discord.Message,
    bot_id: int,
    *,
    allow_dms: bool,
    answer_channels: Iterable[str],
    own_message_ids: Container[int] = (),
) -> bool:
    """The platform-level trigger: mention, reply to the bot, an allowed DM, or an answer-everything channel.

    Wake words and per-room trigger modes are the engine's business, not this function's.
    """
    if message.guild is None:
        return allow_dms
    return (
        mentions_bot(message, bot_id)
        or replies_to_bot(message, bot_id, own_message_ids)
        or in_answer_channel(message.channel, answer_channels)
    )


def readable_text(message: discord.Message, bot_id: int) -> str:
    """The message as a person reads it: the bot's own mention removed, other mentions as @names.

    The model should see "@alice", not "<@1234…>", and should not see itself addressed by an id.
    """
    text = re.sub(rf"<@!?{bot_id}>", "", message.content)
    users = {str(user.id): user for user in message.mentions}
    roles = {str(role.id): role for role in message.role_mentions}
    guild = message.guild

    def user_name(match: re.Match[str]) -> str:
        user = users.get(match.group(1)) or (guild.get_member(int(match.group(1))) if guild else None)
        return f"@{user.display_name}" if user else "@someone"

    def role_name(match: re.Match[str]) -> str:
        role = roles.get(match.group(1)) or (guild.get_role(int(match.group(1))) if guild else None)
        if role is not None and role.tags is not None and role.tags.bot_id == bot_id:
            return ""
        return f"@{role.name}" if role else "@role"

    def channel_name(match: re.Match[str]) -> str:
        channel = guild.get_channel_or_thread(int(match.group(1))) if guild else None
        return f"#{channel.name}" if channel else "#channel"

    text = _USER_MENTION.sub(user_name, text)
    text = _ROLE_MENTION.sub(role_name, text)
    text = _CHANNEL_MENTION.sub(channel_name, text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


# -- attachments ---------------------------------------------------------------------------


def _suffix(filename: str) -> str:
    return PurePath(filename).suffix.lower()


def is_text_file(filename: str, content_type: str | None) -> bool:
    content_type = (content_type or "").split(";")[0].strip().lower()
    return content_type.startswith("text/") or _suffix(filename) in TEXT_SUFFIXES


def is_card_file(filename: str) -> bool:
    return _suffix(filename) in CARD_SUFFIXES


async def read_attachment(item: discord.Attachment, *, cards: bool = False) -> Attachment:
    """Read a small text file into ``text`` (and, with ``cards``, a card or persona file into ``data``).

    Anything else (images, big files) is described by name and size only; a failed download is
    logged and the attachment passed on unread, so one bad file never loses the message.
    """
    filename, content_type = item.filename, item.content_type
    want_text = is_text_file(filename, content_type) and item.size <= MAX_TEXT_ATTACHMENT_BYTES
    want_data = cards and is_card_file(filename) and item.size <= MAX_CARD_BYTES
    text: str | None = None
    data: bytes | None = None
    if want_text or want_data:
        try:
            raw = await item.read()
        except (discord.HTTPException, OSError) as exc:
            log.warning("could not download attachment %s: %s", filename, exc)
            raw = None
        if raw is not None:
            if want_data and len(raw) <= MAX_CARD_BYTES:
                data = raw
            if want_text and len(raw) <= MAX_TEXT_ATTACHMENT_BYTES:
                text = raw.decode("utf-8", errors="replace")
    return Attachment(filename=filename, content_type=content_type, size=item.size, text=text, data=data)


async def read_attachments(items: Iterable[discord.Attachment], *, cards: bool = False) -> tuple[Attachment, ...]:
    return tuple([await read_attachment(item, cards=cards) for item in items])


__all__ = [
    "PLATFORM",
    "author_for",
    "character_reply_name",
    "in_answer_channel",
    "is_addressed",
    "is_operator",
    "read_attachments",
    "readable_text",
    "room_for",
    "room_for_channel_id",
]
