"""Recall runs its full-text and vector halves at once; a failure in either still reaches the caller as
the one error it is (a StorageError is answered in one line), never as an exception group."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.recall import Recall
from errors import StorageError
from memory import ConversationKey, MemoryStore


async def test_a_store_failure_during_recall_is_a_storage_error(tmp_path: Path):
    store = MemoryStore(f"sqlite+aiosqlite:///{tmp_path}/hearth.db")
    await store.start()
    cid = await store.conversation_id(ConversationKey("test", "room"))
    recall = Recall(store)  # full text only: no embedder to load
    try:
        await store.append(cid, role="user", author_id="ann", author_name="Ann", text="Marmalade sleeps")
        assert [hit.text for hit in await recall.search(cid, "where marmalade sleeps?", 5)] == ["Marmalade sleeps"]
        await store.close()
        with pytest.raises(StorageError, match="not started"):
            await recall.search(cid, "where marmalade sleeps?", 5)
    finally:
        await recall.close()
        await store.close()
