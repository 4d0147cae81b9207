"""Memory: what hearth remembers, in SQLite (or PostgreSQL), with rolling summaries.

Imports nothing of engine, personas or adapters; the engine calls in.
"""

from __future__ import annotations

from memory.database import DEFAULT_DATABASE_URL
from memory.export import EXPORT_FORMAT
from memory.recall_index import SearchHit
from memory.store import MemoryStore, clean_text
from memory.types import ROLES, ConversationKey, RoomSettings, StoredMessage, Summary

__all__ = [
    "DEFAULT_DATABASE_URL",
    "EXPORT_FORMAT",
    "ROLES",
    "ConversationKey",
    "MemoryStore",
    "RoomSettings",
    "SearchHit",
    "StoredMessage",
    "Summary",
    "clean_text",
]
