"""The vector table on real SQLite and real PostgreSQL: rows follow their messages, rooms stay apart.

The vectors here are made by hand (the memory layer stores and compares them; the engine's tests
use the real embedder): unit vectors along different axes, so which one is nearest is known.
"""

from __future__ import annotations

import numpy as np
from alembic import command
from sqlalchemy import create_engine, text

from memory import ConversationKey, MemoryStore
from memory.migrate import alembic_config
from memory.vector_index import CHUNK_CHARS, CHUNK_OVERLAP, EXCERPT_CHARS, VectorIndex, chunks, pack

MODEL = "test-embedder"


def axis(i: int, dims: int = 8) -> np.ndarray:
    vector = np.zeros(dims, dtype=np.float32)
    vector[i] = 1.0
    return vector


async def message(store: MemoryStore, cid: int, author: str, said: str, pid: str | None = None) -> int:
    stored = await store.append(cid, role="user", author_id=author, author_name=author, text=said,
                                platform_message_id=pid)
    return stored.id


async def vector_rows(store: MemoryStore) -> int:
    async with store.engine.connect() as connection:
        return (await connection.execute(text("SELECT count(*) FROM message_vectors"))).scalar_one()


async def test_nearest_stays_in_its_room_and_rows_follow_their_messages(store):
    index = VectorIndex(store)
    here = await store.conversation_id(ConversationKey("test", "here"))
    there = await store.conversation_id(ConversationKey("test", "there"))
    ann = await message(store, here, "ann", "Ann's fact", "a1")
    bo = await message(store, here, "bo", "Bo's fact", "b1")
    edited = await message(store, here, "bo", "Bo's other fact", "b2")
    elsewhere = await message(store, there, "cy", "Cy's fact")
    assert {row[0] for row in await index.unindexed(MODEL, 10)} == {ann, bo, edited, elsewhere}
    await index.save(MODEL, [(ann, axis(0)), (bo, axis(1)), (edited, axis(2)), (elsewhere, axis(0))])
    assert await index.unindexed(MODEL, 10) == []

    near = await index.nearest([here], MODEL, axis(0), 10)
    assert near[0] == (ann, 1.0, 0) and elsewhere not in {n.message_id for n in near}, "never another room's vectors"
    assert [hit.text for hit in await index.messages(near[:1])] == ["Ann's fact"]

    await store.edit_message(here, "b2", "Bo changed his mind")
    assert edited not in {n.message_id for n in await index.nearest([here], MODEL, axis(2), 10)}, "an edit drops it"
    assert [row[0] for row in await index.unindexed(MODEL, 10)] == [edited], "and the new text gets embedded"

    await store.forget_author(here, "ann")
    assert ann not in {n.message_id for n in await index.nearest([here], MODEL, axis(0), 10)}, "forget-me removes it"
    await store.reset(here)
    assert await index.nearest([here], MODEL, axis(1), 10) == []
    assert await vector_rows(store) == 1, "reset removes this room's vector rows, and only them"
    stats = await index.stats(there, MODEL)
    assert (stats.messages, stats.vectors) == (1, 1)


async def test_a_new_embedding_model_drops_the_old_vectors(store):
    index = VectorIndex(store)
    cid = await store.conversation_id(ConversationKey("test", "room"))
    first = await message(store, cid, "ann", "hello there")
    await index.save("old-model", [(first, axis(3))])
    assert await index.nearest([cid], "old-model", axis(3), 5) == [(first, 1.0, 0)]
    assert await index.drop_other_models("new-model") == 1
    assert await index.nearest([cid], "old-model", axis(3), 5) == []
    assert [row[0] for row in await index.unindexed("new-model", 5)] == [first]


async def test_a_deletion_by_another_process_is_seen(sqlite_url):
    """The room's matrix is cached in memory; a delete through another store must not be served from it."""
    first, second = MemoryStore(sqlite_url), MemoryStore(sqlite_url)
    await first.start()
    await second.start()
    try:
        index = VectorIndex(first)
        cid = await first.conversation_id(ConversationKey("test", "room"))
        gone = await message(first, cid, "ann", "soon gone")
        kept = await message(first, cid, "bo", "kept")
        await index.save(MODEL, [(gone, axis(0)), (kept, axis(1))])
        assert (await index.nearest([cid], MODEL, axis(0), 1))[0][0] == gone
        await second.forget_author(cid, "ann")
        assert [n.message_id for n in await index.nearest([cid], MODEL, axis(0), 5)] == [kept]
        newer = await message(second, cid, "bo", "newer")
        await VectorIndex(second).save(MODEL, [(newer, axis(5))])
        assert (await index.nearest([cid], MODEL, axis(5), 1))[0][0] == newer, "rows added elsewhere are read"
    finally:
        await first.close()
        await second.close()


def old_database(tmp_path, revision: str, extra: str = "", params: dict | None = None):
    """A SQLite file migrated only up to ``revision``, holding one room and message 7 ('from before')."""
    path = tmp_path / "old.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), revision)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO conversations (id, platform, room_id, thread_id, created_at)"
                                " VALUES (1, 'test', 'old', '', '2024-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO messages (id, conversation_id, role, author_id, author_name, text,"
                                " created_at, edited, deleted) VALUES (7, 1, 'user', 'ann', 'Ann', 'from before',"
                                " '2024-01-01 00:00:00', 0, 0)"))
        if extra:
            connection.execute(text(extra), params or {})
    engine.dispose()
    return path


async def test_migrates_up_from_the_fulltext_schema_with_data_in_it(tmp_path):
    path = old_database(tmp_path, "0004")
    store = MemoryStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        assert [row[2] for row in await VectorIndex(store).unindexed(MODEL, 5)] == ["from before"]
        assert await vector_rows(store) == 0
    finally:
        await store.close()


async def test_a_specific_search_needs_the_querys_rarest_word(store):
    """Small talk of one shape shares most of its words; only the rarest one says what it is about."""
    cid = await store.conversation_id(ConversationKey("test", "shapes"))
    await message(store, cid, "ann", "I walked past a trombone on the way here.")
    await message(store, cid, "bo", "Honestly, I walked past a kayak on the way here.")
    assert await store.search(cid, "Honestly, I walked past a kayak on the way here.", 5), "plain search matches"
    hits = await store.search(cid, "Honestly, I walked past a kayak on the way here.", 5, specific=True)
    assert [hit.text for hit in hits] == ["Honestly, I walked past a kayak on the way here."], "only its own line"


async def test_a_long_message_is_found_by_its_best_chunk_and_shown_as_it(store):
    index = VectorIndex(store)
    cid = await store.conversation_id(ConversationKey("test", "long"))
    document = "".join(f"[part {i}] " + "x" * 300 + " " for i in range(12))  # chunked: over WHOLE_CHARS
    long_id = await message(store, cid, "ann", document)
    short_id = await message(store, cid, "bo", "a short line")
    pieces = chunks(document)
    assert len(pieces) > 3 and pieces[0][0] == 0 and all(len(piece) <= CHUNK_CHARS for _, piece in pieces)
    step = CHUNK_CHARS - CHUNK_OVERLAP
    rebuilt = "".join(piece[:step] for _, piece in pieces[:-1]) + pieces[-1][1]
    assert rebuilt == document, "the chunks cover the whole message, in order, overlapping"
    rows = [(long_id, number, start, axis(1 if number == 2 else 0)) for number, (start, _) in enumerate(pieces)]
    await index.save_chunks(MODEL, [*rows, (short_id, 0, 0, axis(3))])
    assert await index.unindexed(MODEL, 5) == []
    near = await index.nearest([cid], MODEL, axis(1), 5)
    assert near[0] == (long_id, 1.0, pieces[2][0]), "the message once, at its best chunk"
    assert [n.message_id for n in near].count(long_id) == 1 and short_id in {n.message_id for n in near}
    hit = (await index.messages(near[:1]))[0]
    assert pieces[2][1] in hit.text and hit.text.startswith("…") and hit.text.endswith("…")
    assert len(hit.text) == EXCERPT_CHARS + 2, "the part that matched, not the message's beginning"
    stats = await index.stats(cid, MODEL)
    assert (stats.messages, stats.vectors) == (2, 2)
    await store.forget_author(cid, "ann")
    assert await vector_rows(store) == 1, "every chunk goes with its message"


async def test_whole_message_vectors_become_chunk_zero_when_migrating(tmp_path):
    path = old_database(
        tmp_path,
        "0005",
        "INSERT INTO message_vectors (message_id, conversation_id, model, vector) VALUES (7, 1, :model, :vector)",
        {"model": MODEL, "vector": pack(axis(4))},
    )
    store = MemoryStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        index = VectorIndex(store)
        assert await index.unindexed(MODEL, 5) == [], "nothing is embedded again"
        assert await index.nearest([1], MODEL, axis(4), 5) == [(7, 1.0, 0)]
        await store.forget_author(1, "ann")
        assert await vector_rows(store) == 0, "the rebuilt table still cascades"
    finally:
        await store.close()
    command.downgrade(alembic_config(f"sqlite:///{path}"), "0005")
