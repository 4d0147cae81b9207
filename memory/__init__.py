"""Memory: what hearth remembers, in SQLite (or PostgreSQL), with rolling summaries.

Imports nothing of engine, personas or adapters; the engine calls in.
"""

from __future__ import annotations

from memory.store import DEFAULT_DATABASE_URL, MemoryStore
from memory.types import ConversationKey, RoomSettings, StoredMessage, Summary

__all__ = ["DEFAULT_DATABASE_URL", "ConversationKey", "MemoryStore", "RoomSettings", "StoredMessage", "Summary"]
