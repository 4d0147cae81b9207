"""Frozen values the store hands out, so callers never hold live ORM rows across sessions.

Timestamps are aware UTC datetimes on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ROLES = ("user", "assistant", "system")


@dataclass(frozen=True)
class ConversationKey:
    """Where a conversation lives. ``thread_id`` None means the room itself, not a thread."""

    platform: str
    room_id: str
    thread_id: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    role: str
    author_id: str
    author_name: str
    text: str
    platform_message_id: str | None
    created_at: datetime
    edited: bool
    deleted: bool
    token_count: int | None
    edited_at: datetime | None = None


@dataclass(frozen=True)
class Summary:
    conversation_id: int
    text: str
    covers_through_id: int
    stale: bool
    updated_at: datetime


@dataclass(frozen=True)
class RoomSettings:
    persona: str | None = None
    trigger_mode: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
