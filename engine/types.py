"""Frozen values that cross the adapter/engine boundary.

Adapters build these from platform events; the engine never sees a discord or nio object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


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
    """Who wrote a message, and the rights the adapter found for them.

    Two kinds of rights, never mixed: an **operator** has bot-wide rights (models, the
    shared persona library) and is named by id in the config only; a **room manager**
    has rights in this room only (its persona, settings, lore, memory), from platform
    facts such as Discord permissions or a Matrix power level. Room power never makes
    an operator.
    """

    id: str
    display_name: str
    is_operator: bool = False
    is_room_manager: bool = False
    is_bot: bool = False
    on_host: bool = False  # sits at the bot's machine (the console): may name files on it

    @property
    def manages_room(self) -> bool:
        """Operators may do anything a room manager may."""
        return self.is_operator or self.is_room_manager


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message; ``text`` is filled when the adapter could read it."""

    filename: str
    content_type: str | None = None
    size: int = 0
    text: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Speaker:
    """The character who writes a reply in a room whose cast has more than one.

    Adapters show it: a Discord webhook with its name and avatar, a bold name and
    ``org.hearth.character`` on Matrix, ``Name:`` on the console. A reply in a room with one
    persona carries no speaker and looks as it always did.
    """

    name: str  # the display name users see and mention
    key: str  # the persona's library key, what ``persona speak`` takes
    avatar: Attachment | None = None  # the card image (PNG), for webhooks and MSC4144 profiles


@dataclass(frozen=True)
class IncomingMessage:
    """One message from a user, already translated by the adapter.

    ``addressed`` says the platform-level trigger fired (mention, reply to the bot,
    DM, or an answer-everything channel); the engine adds wake words on top.
    ``replied_to`` names the character a reply answers (a reply to a webhook message, or to
    an event carrying ``org.hearth.character``): that character speaks next.
    """

    room: RoomRef
    author: Author
    text: str
    message_id: str | None = None
    addressed: bool = False
    attachments: tuple[Attachment, ...] = ()
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    replied_to: str | None = None  # the character whose message this replies to (its Speaker.name)


class SessionState(Protocol):
    """Durable values an adapter keeps across restarts, such as a Matrix device id and sync token.

    ``bot.py`` hands each adapter one of these, scoped to its account, so an adapter never
    reaches the store itself (``engine.session_state.StoredSessionState`` is the real one).
    """

    async def get(self, name: str) -> str | None: ...

    async def set(self, name: str, value: str) -> None: ...


class PlatformAdapter(Protocol):
    """What the wiring needs of a platform edge: async set-up in ``start``, clean-up in ``close``.

    ``client`` is the platform client, read only to keep its live token out of the logs.
    """

    @property
    def client(self) -> object: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
