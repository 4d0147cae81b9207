"""A conversation as one JSON-serializable document: what ``/memory export`` hands a user.

Soft-deleted messages are left out: the user removed them, so they are not theirs to get back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from memory.types import ConversationKey, RoomSettings, StoredMessage, Summary

EXPORT_FORMAT = "hearth.memory/1"


def export_document(
    conversation_id: int,
    key: ConversationKey,
    settings: RoomSettings,
    summary: Summary | None,
    messages: Iterable[StoredMessage],
) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "exported_at": datetime.now(UTC).isoformat(),
        "conversation_id": conversation_id,
        "key": {"platform": key.platform, "room_id": key.room_id, "thread_id": key.thread_id},
        "settings": {
            "persona": settings.persona,
            "trigger_mode": settings.trigger_mode,
            "sampling": dict(settings.sampling),
            "extra": dict(settings.extra),
        },
        "summary": None if summary is None else _summary(summary),
        "messages": [_message(m) for m in messages if not m.deleted],
    }


def _summary(summary: Summary) -> dict[str, Any]:
    return {
        "text": summary.text,
        "covers_through_id": summary.covers_through_id,
        "stale": summary.stale,
        "updated_at": summary.updated_at.isoformat(),
    }


def _message(message: StoredMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "author_id": message.author_id,
        "author_name": message.author_name,
        "text": message.text,
        "platform_message_id": message.platform_message_id,
        "created_at": message.created_at.isoformat(),
        "edited": message.edited,
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
        "token_count": message.token_count,
    }
