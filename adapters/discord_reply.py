"""Showing one streamed reply on Discord: a growing set of messages, edited in place.

Discord caps a message at 2,000 characters, so a reply may span several messages. Each
render splits the whole text again (code fences stay balanced) and touches only the
messages whose piece changed: usually just the last one. Every send and edit carries the
safe ``AllowedMentions``, so nothing the model writes can ping anyone but the person asked.

``discord.max_edits`` caps the updates of the whole reply, not of each message: one update
edits a message at most once, so no message is edited more than ``max_edits`` times. When a
long reply reaches the cap, its later messages appear with the final update.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from adapters.rendering import EMPTY_REPLY, EditThrottle, present_reply, split_message
from engine.reply import ReplyStream

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
                    self.messages[index] = await self.messages[index].edit(
                        content=piece, allowed_mentions=SAFE_MENTIONS
                    )
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
                await extra.delete()

    async def _send(self, piece: str, *, first: bool) -> discord.Message:
        if first and self.reference is not None:
            reference = self.reference.to_reference(fail_if_not_exists=False)
            return await self.channel.send(piece, reference=reference, allowed_mentions=SAFE_MENTIONS)
        return await self.channel.send(piece, allowed_mentions=SAFE_MENTIONS)


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
) -> ReplyMessages:
    """Wait for a queued turn and stream it into messages, with typing kept alive throughout.

    ``reply`` is the ticket's future: it resolves when the room's turn starts. While it waits,
    a "you're #N in line" notice (when N > 1) becomes the message the reply is later edited into.
    A failure shows one short error line under whatever text was already written. At most
    ``max_edits`` updates follow the first send, the last of them with the whole reply.
    """
    messages = ReplyMessages(channel, reference, on_sent=on_sent)

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
