"""Frozen values that cross the adapter/engine boundary.

Adapters build these from platform events; the engine never sees a discord or nio object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class RoomRef:
    """Where a message lives. A thread is its own conversation."""

    platform: str
    room_id: str
    thread_id: str | None = None

    @property
    def label(self) -> str:
        """A short human-readable id, used in logs and the CLI."""
        base = f"{self.platform}:{self.room_id}"
        return f"{base}/{self.thread_id}" if self.thread_id else base


@dataclass(frozen=True)
class Author:
    """Who wrote a message. Admin and room-manager rights are decided by the adapter from platform roles."""

    id: str
    display_name: str
    is_admin: bool = False
    is_room_manager: bool = False
    is_bot: bool = False


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message; ``text`` is filled when the adapter could read it."""

    filename: str
    content_type: str | None = None
    size: int = 0
    text: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class IncomingMessage:
    """One message from a user, already translated by the adapter.

    ``addressed`` says the platform-level trigger fired (mention, reply to the bot,
    DM, or an answer-everything channel); the engine adds wake words on top.
    """

    room: RoomRef
    author: Author
    text: str
    message_id: str | None = None
    addressed: bool = False
    attachments: tuple[Attachment, ...] = ()
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
