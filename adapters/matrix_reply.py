"""Showing one streamed reply in a Matrix room: one event, then ``m.replace`` edits of it.

The first event answers the triggering message (inside its thread when there is one);
later text arrives as edits no more often than ``matrix.edit_interval`` and no more than
``matrix.max_edits`` times, and the final edit carries the whole reply: clients load every
edit of an event, and a room with a message edited ~1,000 times stops loading in some.
Typing notifications run while the model writes.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nio import AsyncClient, RoomSendResponse, UploadResponse

from adapters.matrix_characters import Character, CharacterAvatars, character_content
from adapters.matrix_render import edit_content, text_content, with_relation
from adapters.rendering import EditThrottle, defuse_mentions, present_reply
from engine.reply import ReplyStream
from engine.types import Attachment
from errors import InternalError

log = logging.getLogger(__name__)

TYPING_TIMEOUT_MS = 30_000
TYPING_REFRESH_S = 20.0


class MatrixSendError(InternalError):
    """The homeserver refused an event we sent."""


async def send_event(client: AsyncClient, room_id: str, content: dict[str, Any]) -> str:
    """Send one ``m.room.message`` (encrypted when the room is) and return its event id."""
    response = await client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
    if not isinstance(response, RoomSendResponse):
        raise MatrixSendError(f"the homeserver refused a message: {getattr(response, 'message', response)}")
    return response.event_id


async def file_content(client: AsyncClient, room_id: str, file: Attachment) -> dict[str, Any]:
    """Upload ``file`` (encrypted when the room is) and return the ``m.file`` content that shows it."""
    data = file.data or b""
    mimetype = file.content_type or "application/octet-stream"
    room = client.rooms.get(room_id)
    encrypt = bool(room is not None and room.encrypted)
    response, keys = await client.upload(io.BytesIO(data), mimetype, file.filename, encrypt=encrypt, filesize=len(data))
    if not isinstance(response, UploadResponse):
        raise MatrixSendError(f"the homeserver refused a file: {getattr(response, 'message', response)}")
    name = defuse_mentions(file.filename)
    content: dict[str, Any] = {
        "msgtype": "m.file",
        "body": name,
        "filename": name,
        "info": {"mimetype": mimetype, "size": len(data)},
        "m.mentions": {},
    }
    if encrypt:
        content["file"] = {"url": response.content_uri, **(keys or {})}
    else:
        content["url"] = response.content_uri
    return content


class ReplyEvent:
    """The event that shows one reply; ``show`` sends it the first time and edits it after.

    Once ``character`` is set (a cast's reply, known when its turn starts) every send and
    edit shows that character, and ``on_character`` hears which event it wrote.
    """

    def __init__(
        self,
        client: AsyncClient,
        room_id: str,
        *,
        reply_to: str | None,
        thread: str | None,
        msgtype: str,
        on_sent: Callable[[str], None] | None = None,
        on_character: Callable[[str, str], None] | None = None,
    ) -> None:
        self.client = client
        self.room_id = room_id
        self.reply_to = reply_to
        self.thread = thread
        self.msgtype = msgtype
        self.on_sent = on_sent
        self.on_character = on_character
        self.character: Character | None = None
        self.event_id: str | None = None
        self.shown = ""
        self._tagged = False

    async def show(self, text: str) -> None:
        if text == self.shown:
            return
        character = self.character
        if character is None:
            content = text_content(text, self.msgtype)
        else:
            content = character_content(text, self.msgtype, character)
        if self.event_id is None:
            with_relation(content, reply_to=self.reply_to, thread=self.thread)
            self.event_id = await send_event(self.client, self.room_id, content)
            if self.on_sent is not None:
                self.on_sent(self.event_id)
        else:
            await send_event(self.client, self.room_id, edit_content(self.event_id, content))
        self.shown = text
        if character is not None and not self._tagged and self.on_character is not None:
            self.on_character(self.event_id, character.name)
            self._tagged = True


async def deliver_reply(
    client: AsyncClient,
    room_id: str,
    reply: Awaitable[ReplyStream],
    *,
    reply_to: str | None,
    thread: str | None,
    position: int = 0,
    msgtype: str = "m.text",
    edit_interval: float = 1.0,
    max_edits: int | None = None,
    clock: Callable[[], float] | None = None,
    on_sent: Callable[[str], None] | None = None,
    avatars: CharacterAvatars | None = None,
    on_character: Callable[[str, str], None] | None = None,
) -> ReplyEvent:
    """Wait for the room's turn and stream the reply into one edited event.

    A "you're #N in line" notice (N > 1) becomes the event the reply is later edited into.
    A failure adds one short error line under whatever was already written. A reply with a
    ``speaker`` (a cast's character) is shown as that character from its first text on.
    """
    event = ReplyEvent(
        client, room_id, reply_to=reply_to, thread=thread, msgtype=msgtype, on_sent=on_sent, on_character=on_character
    )

    async def turn() -> ReplyStream:
        stream = await reply
        if stream.speaker is not None:
            speaker = stream.speaker
            event.character = await avatars.character(speaker) if avatars else Character(speaker.name, speaker.key)
        return stream

    async def send_typing() -> None:
        await client.room_typing(room_id, True, timeout=TYPING_TIMEOUT_MS)

    throttle = EditThrottle(edit_interval, clock or time.monotonic, max_edits=max_edits)
    try:
        await present_reply(
            turn(),
            event.show,
            throttle,
            send_typing=send_typing,
            position=position,
            typing_every=TYPING_REFRESH_S,
            label=room_id,
        )
    finally:
        try:
            await client.room_typing(room_id, False)
        except Exception:  # typing is cosmetic
            log.debug("could not clear typing in %s", room_id, exc_info=True)
    return event


__all__ = ["MatrixSendError", "ReplyEvent", "deliver_reply", "file_content", "send_event"]
