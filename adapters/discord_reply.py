"""Showing one streamed reply on Discord: a growing set of messages, edited in place.

Discord caps a message at 2,000 characters, so a reply may span several messages. Each
render splits the whole text again (code fences stay balanced) and touches only the
messages whose piece changed: usually just the last one. Every send and edit carries the
safe ``AllowedMentions``, so nothing the model writes can ping anyone but the person asked.

``discord.max_edits`` caps the updates of the whole reply, not of each message: one update
edits a message at most once, so no message is edited more than ``max_edits`` times. When a
long reply reaches the cap, its later messages appear with the final update.

A reply written by one character of a cast (``ReplyStream.speaker``) goes through that
character's channel webhook instead (``discord_webhooks``), with the same splitting, throttle
and mention safety; without webhooks it is a bot message that starts with the name in bold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from adapters.discord_webhooks import CharacterHook, CharacterWebhooks, display_username
from adapters.rendering import EMPTY_REPLY, EditThrottle, defuse_mentions, present_reply, split_message
from engine.reply import ReplyStream
from engine.types import Speaker

log = logging.getLogger(__name__)

DISCORD_LIMIT = 2000
SAFE_MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=False, replied_user=True)


class ReplyMessages:
    """The bot messages that show one reply; the first answers ``reference`` when there is one."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        reference: discord.Message | None = None,
        *,
        limit: int = DISCORD_LIMIT,
        on_sent: Callable[[discord.Message], None] | None = None,
    ) -> None:
        self.channel = channel
        self.reference = reference
        self.limit = limit
        self.on_sent = on_sent
        self.messages: list[discord.Message] = []
        self.shown: list[str] = []

    @property
    def text(self) -> str:
        """What the messages currently show, joined (for appending an error line)."""
        return "\n".join(self.shown)

    async def show(self, text: str) -> None:
        """Make the messages show ``text``: edit the pieces that changed, send new ones, drop extras."""
        pieces = split_message(text, self.limit) or [EMPTY_REPLY]
        for index, piece in enumerate(pieces):
            if index < len(self.messages):
                if self.shown[index] != piece:
                    self.messages[index] = await self._edit(self.messages[index], piece)
                    self.shown[index] = piece
            else:
                message = await self._send(piece, first=index == 0)
                self.messages.append(message)
                self.shown.append(piece)
                if self.on_sent is not None:
                    self.on_sent(message)
        while len(self.messages) > len(pieces):
            extra = self.messages.pop()
            self.shown.pop()
            with contextlib.suppress(discord.HTTPException):
                await self._delete(extra)

    async def clear(self) -> None:
        """Delete every message shown so far (a queue notice the character's webhook replaces)."""
        while self.messages:
            self.shown.pop()
            with contextlib.suppress(discord.HTTPException):
                await self._delete(self.messages.pop())

    async def _send(self, piece: str, *, first: bool) -> discord.Message:
        if first and self.reference is not None:
            reference = self.reference.to_reference(fail_if_not_exists=False)
            return await self.channel.send(piece, reference=reference, allowed_mentions=SAFE_MENTIONS)
        return await self.channel.send(piece, allowed_mentions=SAFE_MENTIONS)

    async def _edit(self, message: discord.Message, piece: str) -> discord.Message:
        return await message.edit(content=piece, allowed_mentions=SAFE_MENTIONS)

    async def _delete(self, message: discord.Message) -> None:
        await message.delete()


class NamedMessages(ReplyMessages):
    """A character's reply as bot messages, its name in bold first: the fallback without webhooks."""

    def __init__(self, channel: Any, speaker: Speaker, reference: discord.Message | None = None, **kwargs: Any) -> None:
        super().__init__(channel, reference, **kwargs)
        self.prefix = f"**{discord.utils.escape_markdown(defuse_mentions(speaker.name))}**: "

    async def show(self, text: str) -> None:
        await super().show(self.prefix + text)


class WebhookMessages(ReplyMessages):
    """A character's reply through its webhook: sent under its name, edited with ``edit_message``.

    A webhook message cannot be a Discord reply, so ``reference`` is not used. Every payload
    (send and edit) carries the same safe ``AllowedMentions`` as the bot's own messages.
    """

    def __init__(self, channel: Any, hook: CharacterHook, speaker: Speaker, **kwargs: Any) -> None:
        super().__init__(channel, None, **kwargs)
        self.hook = hook
        self.speaker = speaker
        self.username = display_username(speaker.name)

    async def _send(self, piece: str, *, first: bool) -> discord.Message:
        return await self.hook.webhook.send(
            piece, username=self.username, allowed_mentions=SAFE_MENTIONS, wait=True, **self.hook.target()
        )

    async def _edit(self, message: discord.Message, piece: str) -> discord.Message:
        return await self.hook.webhook.edit_message(
            message.id, content=piece, allowed_mentions=SAFE_MENTIONS, **self.hook.target()
        )

    async def _delete(self, message: discord.Message) -> None:
        await self.hook.webhook.delete_message(message.id, **self.hook.target())


class CastMessages:
    """Shows one reply the way its speaker calls for: bot messages for a room with one persona,
    the character's webhook for a cast, or bot messages with the name in bold without webhooks.

    The speaker is known only once the turn starts (``reply`` resolves), so a queue notice shown
    before goes out as a bot message and is deleted when the character's webhook takes over.
    """

    def __init__(
        self,
        channel: Any,
        reply: asyncio.Future[ReplyStream] | Awaitable[ReplyStream],
        webhooks: CharacterWebhooks | None,
        reference: discord.Message | None = None,
        *,
        on_sent: Callable[[discord.Message], None] | None = None,
    ) -> None:
        self.channel = channel
        self.reply = reply
        self.webhooks = webhooks
        self.reference = reference
        self.on_sent = on_sent
        self.plain = ReplyMessages(channel, reference, on_sent=on_sent)
        self.current: ReplyMessages = self.plain

    async def show(self, text: str) -> None:
        if self.current is self.plain:
            speaker = self._speaker()
            if speaker is not None:
                await self._switch(speaker)
        try:
            await self.current.show(text)
        except discord.NotFound:
            if not isinstance(self.current, WebhookMessages) or self.current.messages or self.webhooks is None:
                raise
            self.webhooks.forget(self.current.hook)  # deleted by someone: make it again, once
            await self._switch(self.current.speaker)
            await self.current.show(text)
        except discord.HTTPException as exc:
            if not isinstance(self.current, WebhookMessages) or self.current.messages:
                raise
            if exc.status == 400 and self.webhooks is not None:  # the name itself: not worth trying again
                self.webhooks.refuse_speaker(self.channel, self.current.speaker, exc)
            else:  # discord.py already retried rate limits and server errors; this reply goes as a bot message
                log.warning("discord: a character's webhook message failed (%s); sent as a bot message", exc)
            self.current = self._named(self.current.speaker)
            await self.current.show(text)

    def _speaker(self) -> Speaker | None:
        reply = self.reply
        if not isinstance(reply, asyncio.Future) or not reply.done() or reply.cancelled():
            return None
        if reply.exception() is not None:
            return None
        return reply.result().speaker

    async def _switch(self, speaker: Speaker) -> None:
        await self.plain.clear()
        hook = await self.webhooks.for_speaker(self.channel, speaker) if self.webhooks is not None else None
        if hook is None:
            self.current = self._named(speaker)
        else:
            self.current = WebhookMessages(self.channel, hook, speaker, on_sent=self._remember(speaker))

    def _named(self, speaker: Speaker) -> NamedMessages:
        def sent(message: discord.Message) -> None:
            if self.on_sent is not None:
                self.on_sent(message)
            self._remember(speaker)(message)

        return NamedMessages(self.channel, speaker, self.reference, on_sent=sent)

    def _remember(self, speaker: Speaker) -> Callable[[discord.Message], None]:
        def sent(message: discord.Message) -> None:
            if self.webhooks is not None:
                self.webhooks.remember(message.id, speaker.name)

        return sent

    @property
    def messages(self) -> list[discord.Message]:
        return self.current.messages


async def deliver_reply(
    channel: Any,
    reply: Awaitable[ReplyStream],
    *,
    reference: discord.Message | None = None,
    position: int = 0,
    edit_interval: float = 1.0,
    max_edits: int | None = None,
    clock: Callable[[], float] | None = None,
    on_sent: Callable[[discord.Message], None] | None = None,
    room_label: str = "discord",
    webhooks: CharacterWebhooks | None = None,
) -> CastMessages:
    """Wait for a queued turn and stream it into messages, with typing kept alive throughout.

    ``reply`` is the ticket's future: it resolves when the room's turn starts. While it waits,
    a "you're #N in line" notice (when N > 1) becomes the message the reply is later edited into.
    A failure shows one short error line under whatever text was already written. At most
    ``max_edits`` updates follow the first send, the last of them with the whole reply.
    A reply with a ``speaker`` (a cast's character) goes through that character's webhook.
    """
    messages = CastMessages(channel, reply, webhooks, reference, on_sent=on_sent)

    async def send_typing() -> None:
        await channel.typing()

    throttle = EditThrottle(edit_interval, clock or time.monotonic, max_edits=max_edits)
    await present_reply(
        reply,
        messages.show,
        throttle,
        send_typing=send_typing,
        position=position,
        label=room_label,
        transport_errors=(discord.HTTPException,),
    )
    return messages
