"""The channel webhooks a cast's characters speak through on Discord, each with its own name and avatar.

Why one webhook per character, its avatar set when the webhook is created: a webhook message
can only take ``avatar_url``, a URL, and the card image exists only as bytes. Uploading it as
an attachment and reusing the attachment's CDN URL does not work: Discord attachment URLs are
signed and expire, and Discord does not render its own CDN links as webhook avatars at all
(discord-api-docs#6657). A webhook's *own* avatar is stored by Discord for good, so a webhook
created with the card image (``create_webhook(avatar=bytes)``) shows it on every message with
nothing to host. Each message still passes ``username``, so the name users see is the
character's, while the webhook's own name is an id: ``hearth <key> <digest>``, where the
digest covers the card image, so a new image gets a new webhook instead of a stale avatar.

Webhooks are found again after a restart (``channel.webhooks()``, those this bot created with
that prefix) and created only when missing, never per message. A channel holds at most 15
webhooks; at the cap the least recently used hearth webhook there is deleted to make room.
A thread uses its parent channel's webhooks (messages are sent with ``thread=``).

Without Manage Webhooks (or in a DM, which has none) ``for_speaker`` returns None and the
reply goes out as a bot message with the name in bold; one log line per channel says why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord

from adapters.discord_mapping import character_reply_name
from engine.types import Speaker

log = logging.getLogger(__name__)

PREFIX = "hearth"
NAME_LIMIT = 80  # Discord's cap on a webhook's name and on a message's username
MAX_WEBHOOKS_CODE = 30007  # "Maximum number of webhooks reached"
RETRY_REFUSED_S = 600.0  # after Discord refused, try the webhooks of that channel again this much later
SENT_KEPT = 2000  # character message ids remembered, for replies whose target Discord did not resolve
_RESERVED = re.compile(r"clyde|discord", re.IGNORECASE)  # Discord refuses webhook names containing these


def webhook_name(speaker: Speaker) -> str:
    """The webhook's own name: which character, and which card image it was created with."""
    avatar = speaker.avatar.data if speaker.avatar is not None and speaker.avatar.data else b""
    digest = hashlib.sha256(speaker.key.encode("utf-8") + b"\0" + avatar).hexdigest()[:10]
    key = _RESERVED.sub("", speaker.key).strip()[: NAME_LIMIT - len(PREFIX) - 12] or "character"
    return f"{PREFIX} {key} {digest}"


def display_username(name: str) -> str:
    """The name a webhook message shows, within Discord's 80 characters."""
    return name.strip()[:NAME_LIMIT] or "character"


@dataclass(frozen=True)
class CharacterHook:
    """Where one character's message goes: its webhook, and the thread inside the webhook's channel."""

    webhook: discord.Webhook
    thread: discord.abc.Snowflake | None = None

    def target(self) -> dict[str, Any]:
        """The ``thread=`` keyword for every send, edit and delete (absent outside threads)."""
        return {"thread": self.thread} if self.thread is not None else {}


class CharacterWebhooks:
    """Finds or creates each character's webhook per channel, and remembers which messages were whose."""

    def __init__(self, client: discord.Client, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self._hooks: dict[tuple[int, str], discord.Webhook] = {}  # (channel id, webhook name) → webhook
        self._used: dict[int, float] = {}  # webhook id → last use, to pick one to delete at the cap
        self._ids: set[int] = set()  # every hearth webhook seen: their messages are characters'
        self._listed: set[int] = set()  # channels whose existing webhooks were read
        self._refused: dict[int, float] = {}  # channel id → when Discord refused webhooks there
        self._warned: set[int] = set()
        self._unsendable: set[tuple[int, str]] = set()  # (channel id, name) Discord refused as a username
        self._locks: dict[int, asyncio.Lock] = {}
        self._sent: OrderedDict[int, str] = OrderedDict()  # message id → character name

    # -- what is ours ------------------------------------------------------------------------

    def owns(self, webhook_id: int | None) -> bool:
        return webhook_id is not None and webhook_id in self._ids

    def remember(self, message_id: int, name: str) -> None:
        """A character's message (webhook or bold fallback): a reply to it addresses that character."""
        self._sent[message_id] = name
        self._sent.move_to_end(message_id)
        while len(self._sent) > SENT_KEPT:
            self._sent.popitem(last=False)

    async def replied_character(self, message: discord.Message) -> str | None:
        """The character a user's reply answers, or None. A webhook unknown so far (a message from
        before a restart) makes this read the channel's webhooks once."""
        name = character_reply_name(message, self._ids, self._sent)
        if name is not None:
            return name
        resolved = message.reference.resolved if message.reference is not None else None
        if not isinstance(resolved, discord.Message) or resolved.webhook_id is None:
            return None
        parent, _ = _home(message.channel)
        if parent is None or parent.id in self._listed or not self._may_manage(parent):
            return None
        try:
            await self._list(parent)
        except discord.HTTPException as exc:
            log.debug("could not read the webhooks of %s: %s", parent.id, exc)
            return None
        return character_reply_name(message, self._ids, self._sent)

    # -- finding and creating ----------------------------------------------------------------

    async def for_speaker(self, channel: Any, speaker: Speaker) -> CharacterHook | None:
        """The character's webhook for ``channel`` (a thread: its parent's), or None to fall back."""
        parent, thread = _home(channel)
        if parent is None:
            self._fall_back(getattr(channel, "id", 0), "direct messages and uncached channels have no webhooks")
            return None
        if not self._may_manage(parent):
            self._fall_back(parent.id, "the bot lacks the Manage Webhooks permission there")
            return None
        refused = self._refused.get(parent.id)
        if refused is not None and self.clock() - refused < RETRY_REFUSED_S:
            return None
        if (parent.id, speaker.name) in self._unsendable:
            return None
        name = webhook_name(speaker)
        async with self._locks.setdefault(parent.id, asyncio.Lock()):
            try:
                webhook = await self._find_or_create(parent, name, speaker)
            except discord.HTTPException as exc:  # Forbidden: a channel override denies Manage Webhooks
                self._refused[parent.id] = self.clock()
                self._fall_back(parent.id, f"Discord refused the webhook ({exc.status} {exc.text or 'no detail'})")
                return None
        self._refused.pop(parent.id, None)
        self._used[webhook.id] = self.clock()
        return CharacterHook(webhook, thread)

    def refuse_speaker(self, channel: Any, speaker: Speaker, exc: discord.HTTPException) -> None:
        """Discord refused a message under this character's name (it may not contain "clyde" or
        "discord"): the character speaks as bot messages in this channel, said once in the log."""
        parent, _ = _home(channel)
        key = (getattr(parent, "id", 0), speaker.name)
        if key not in self._unsendable:
            self._unsendable.add(key)
            log.warning(
                "discord: Discord refused webhook messages named %r in channel %s (%s %s); "
                "that character speaks as bot messages with its name in bold",
                speaker.name,
                key[0],
                exc.status,
                exc.text or "no detail",
            )

    def forget(self, hook: CharacterHook) -> None:
        """The webhook is gone (deleted by someone): the next reply creates it again."""
        for key, webhook in list(self._hooks.items()):
            if webhook.id == hook.webhook.id:
                del self._hooks[key]
        self._used.pop(hook.webhook.id, None)

    async def _find_or_create(self, parent: Any, name: str, speaker: Speaker) -> discord.Webhook:
        if parent.id not in self._listed:
            await self._list(parent)
        webhook = self._hooks.get((parent.id, name))
        if webhook is not None:
            return webhook
        avatar = speaker.avatar.data if speaker.avatar is not None else None
        reason = f"hearth: {speaker.name} of this channel's cast speaks through it"
        try:
            webhook = await parent.create_webhook(name=name, avatar=avatar, reason=reason)
        except discord.HTTPException as exc:
            if exc.code != MAX_WEBHOOKS_CODE or not await self._evict(parent.id):
                raise
            webhook = await parent.create_webhook(name=name, avatar=avatar, reason=reason)
        self._keep(parent.id, webhook)
        return webhook

    async def _list(self, parent: Any) -> None:
        me = self.client.user
        for webhook in await parent.webhooks():
            ours = webhook.user is not None and me is not None and webhook.user.id == me.id
            if ours and webhook.token and (webhook.name or "").startswith(PREFIX + " "):
                self._keep(parent.id, webhook)
        self._listed.add(parent.id)

    def _keep(self, channel_id: int, webhook: discord.Webhook) -> None:
        self._hooks[(channel_id, webhook.name or "")] = webhook
        self._ids.add(webhook.id)
        self._used.setdefault(webhook.id, 0.0)

    async def _evict(self, channel_id: int) -> bool:
        """Delete the channel's least recently used hearth webhook; False when it has none."""
        mine = [(key, hook) for key, hook in self._hooks.items() if key[0] == channel_id]
        if not mine:
            return False
        key, oldest = min(mine, key=lambda item: self._used.get(item[1].id, 0.0))
        await oldest.delete(reason="hearth: making room for another character of the cast")
        del self._hooks[key]
        self._used.pop(oldest.id, None)
        return True  # its id stays in _ids: replies to its old messages still name the character

    # -- permissions -------------------------------------------------------------------------

    def _may_manage(self, parent: Any) -> bool:
        guild = getattr(parent, "guild", None)
        me = guild.me if guild is not None else None
        if me is None:
            return False
        try:
            return bool(parent.permissions_for(me).manage_webhooks)
        except Exception:  # an uncached member or role: let Discord decide
            log.debug("could not resolve webhook permissions in %s", parent.id, exc_info=True)
            return True

    def _fall_back(self, channel_id: int, reason: str) -> None:
        if channel_id in self._warned:
            return
        self._warned.add(channel_id)
        log.warning(
            "discord: characters in channel %s speak as bot messages with their name in bold: %s", channel_id, reason
        )


def _home(channel: Any) -> tuple[Any, discord.Thread | None]:
    """The channel that holds the webhooks (a thread's parent), and the thread, if any."""
    if isinstance(channel, discord.Thread):
        return channel.parent, channel
    if getattr(channel, "guild", None) is None:
        return None, None
    return channel, None


__all__ = ["CharacterHook", "CharacterWebhooks", "display_username", "webhook_name"]
