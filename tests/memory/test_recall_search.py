"""Recall's reads in one round trip each: full-text scores use this room's own counts, and the vector
search checks the room's table while the question is still being embedded.

Real SQLite and real PostgreSQL (``store`` is parametrised over both backends).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from errors import StorageError
from memory import ConversationKey, MemoryStore
from memory.recall_index import rarity
from memory.vector_index import VectorIndex
from tests.memory.test_vector_index import MODEL, axis, message


async def test_scores_weigh_words_by_this_rooms_own_counts(store):
    """The message count and each word's count come with the hits (one statement); they must be this
    room's, without deleted messages: another room full of the same words changes nothing here."""
    here = await store.conversation_id(ConversationKey("test", "here"))
    there = await store.conversation_id(ConversationKey("test", "there"))
    for n in range(12):
        await message(store, there, "cy", f"rain and marmalade, day {n}")
    await message(store, here, "ann", "Marmalade the cat sleeps")
    await message(store, here, "bo", "Marmalade again, the cat")
    await message(store, here, "ann", "Rain all week")
    await message(store, here, "bo", "Nothing to report")
    await message(store, here, "bo", "Rain and more rain", "gone")
    await store.delete_message(here, "gone")

    hits = await store.search(here, "marmalade rain", limit=10)
    rain, marmalade = rarity(4, 1), rarity(4, 2)  # 4 messages here: 'rain' in 1, 'marmalade' in 2
    scores = {hit.text: hit.score for hit in hits}
    assert set(scores) == {"Marmalade the cat sleeps", "Marmalade again, the cat", "Rain all week"}
    assert scores["Rain all week"] == pytest.approx(rain / (rain + marmalade))
    assert scores["Marmalade the cat sleeps"] == pytest.approx(marmalade / (rain + marmalade))
    assert [hit.text for hit in await store.search(there, "marmalade", limit=1)] == ["rain and marmalade, day 11"]


@pytest.fixture
async def two_processes(sqlite_url: str) -> AsyncIterator[tuple[MemoryStore, MemoryStore]]:
    """Two stores on one SQLite file, as two hearth processes would have."""
    stores = (MemoryStore(sqlite_url), MemoryStore(sqlite_url))
    for store in stores:
        await store.start()
    yield stores
    for store in stores:
        await store.close()


async def embedding(vector: np.ndarray) -> np.ndarray:
    """A question's vector that is still on its way, as from the embedder's thread."""
    await asyncio.sleep(0.01)
    return vector


async def test_nearest_reads_the_room_while_the_question_is_embedded(two_processes):
    """``nearest`` takes the question's vector still on its way; what it returns is as fresh as ever:
    a deletion and a new vector written by another process are both seen."""
    mine, other = two_processes
    index = VectorIndex(mine)
    cid = await mine.conversation_id(ConversationKey("test", "room"))
    gone, kept = [await message(mine, cid, name, f"{name} said") for name in ("ann", "bo")]
    await index.save(MODEL, [(gone, axis(0)), (kept, axis(1))])
    assert (await index.nearest([cid], MODEL, embedding(axis(0)), 1))[0][0] == gone  # now cached

    await other.forget_author(cid, "ann")
    newer = await message(other, cid, "bo", "newer")
    await VectorIndex(other).save(MODEL, [(newer, axis(5))])
    near = {n.message_id for n in await index.nearest([cid], MODEL, embedding(axis(0)), 5)}
    assert near == {kept, newer}, "the deletion is seen, and the new row is read"
    assert await index.nearest([cid], MODEL, embedding(axis(5)), 1) == [(newer, 1.0, 0)]


async def test_a_failed_embedding_is_its_own_error(sqlite_url):
    """The room check and the embedding run together; a failure comes out as itself, not as a group."""
    store = MemoryStore(sqlite_url)
    await store.start()
    try:
        cid = await store.conversation_id(ConversationKey("test", "room"))

        async def broken() -> np.ndarray:
            raise StorageError("the embedder broke")

        with pytest.raises(StorageError, match="the embedder broke"):
            await VectorIndex(store).nearest([cid], MODEL, broken(), 5)
    finally:
        await store.close()
