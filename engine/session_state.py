"""Adapter session values (``engine.types.SessionState``) kept in the store's platform state."""

from __future__ import annotations

from memory import MemoryStore


class StoredSessionState:
    """One account's durable values under ``namespace``, keyed ``account/name``.

    The key layout is what the Matrix adapter has always written, so an upgraded bot
    resumes its device and sync token.
    """

    def __init__(self, store: MemoryStore, namespace: str, account: str) -> None:
        self.store = store
        self.namespace = namespace
        self.account = account

    async def get(self, name: str) -> str | None:
        return await self.store.get_state(self.namespace, f"{self.account}/{name}")

    async def set(self, name: str, value: str) -> None:
        await self.store.set_state(self.namespace, f"{self.account}/{name}", value)
