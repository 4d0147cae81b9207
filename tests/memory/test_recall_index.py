"""The full-text index on real SQLite (FTS5) and real PostgreSQL (tsvector): search, privacy, migration."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from memory import ConversationKey, MemoryStore
from memory.migrate import alembic_config
from memory.recall_index import fts5_query, query_terms, tsquery

HOSTILE = [
    '"', "'", "*", "NEAR(a b)", "a OR", "AND NOT", "-x", "x:y", "^start", "\\", "(", ")", "{a b}", "col:term",
    "''; DROP TABLE messages; --", "!@#$%^&*()", "\u0301\u202e", "ünïcödé", "a" * 5000, "_", "0", "NOT",
]


async def room(store: MemoryStore, name: str) -> int:
    return await store.conversation_id(ConversationKey("test", name))


async def say(store: MemoryStore, conversation_id: int, name: str, text: str, pid: str | None = None) -> None:
    role = "assistant" if name == "Hearth" else "user"
    await store.append(conversation_id, role=role, author_id=name.lower(), author_name=name, text=text,
                       platform_message_id=pid)


async def index_rows(store: MemoryStore, word: str) -> int:
    """Rows the index itself still holds for ``word`` (SQLite: read the FTS5 table, not messages)."""
    async with store.engine.connect() as connection:
        if store.engine.dialect.name != "sqlite":
            query = "SELECT count(*) FROM messages WHERE to_tsvector('simple', text) @@ to_tsquery('simple', :q)"
            return (await connection.execute(text(query), {"q": tsquery([word])})).scalar_one()
        query = "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH :q"
        return (await connection.execute(text(query), {"q": fts5_query([word])})).scalar_one()


async def test_search_ranks_this_rooms_messages_and_skips_deleted_ones(store):
    here, there = await room(store, "here"), await room(store, "there")
    await say(store, here, "Ann", "My cat Marmalade hates rain.", "m1")
    await say(store, here, "Bo", "We had rain all week.")
    await say(store, here, "Hearth", "Rain again!")
    await say(store, here, "Ann", "Marmalade the cat says hi", "gone")
    await say(store, there, "Cy", "Marmalade is my cat too")
    await store.delete_message(here, "gone")

    hits = await store.search(here, "What does Marmalade think of the rain?", limit=10)
    assert hits[0].text == "My cat Marmalade hates rain." and hits[0].score == 1.0, "both words beat one"
    assert {hit.text for hit in hits} == {"My cat Marmalade hates rain.", "We had rain all week.", "Rain again!"}
    assert hits[1].score == hits[2].score < 0.2, "'rain' is in every message here: it weighs little"
    first = hits[0]
    assert (first.speaker, first.role) == ("Ann", "user") and first.created_at.tzinfo is not None
    assert [hit.message_id for hit in await store.search(here, "marmalade", limit=1)] == [first.message_id]
    assert [hit.speaker for hit in await store.search(there, "marmalade rain")] == ["Cy"], "never another room"
    assert await store.search(here, "the and of what") == [], "common words alone match nothing"
    assert await store.search(here, "") == []


async def test_user_text_is_never_search_syntax(store):
    here = await room(store, "here")
    await say(store, here, "Ann", 'He said "NEAR" and OR x:y ünïcödé')
    for query in HOSTILE:
        await store.search(here, query)  # never a syntax error, whatever the user typed
    assert [hit.speaker for hit in await store.search(here, 'NEAR" OR "x')] == ["Ann"]
    assert [hit.speaker for hit in await store.search(here, "unicode? ünïcödé!")] == ["Ann"]
    assert await store.count_messages(here) == 1


async def test_edits_follow_and_forget_me_and_reset_empty_the_index(store):
    here, there = await room(store, "here"), await room(store, "there")
    await say(store, here, "Ann", "I live in Zanzibar", "p1")
    await say(store, here, "Bo", "Quixotic plans for Zanzibar")
    await say(store, there, "Ann", "Zanzibar, again")

    await store.edit_message(here, "p1", "I live in Timbuktu")
    assert [hit.text for hit in await store.search(here, "timbuktu")] == ["I live in Timbuktu"]
    assert [hit.speaker for hit in await store.search(here, "zanzibar")] == ["Bo"], "the old text left the index"

    await store.forget_author(here, "ann")
    assert await store.search(here, "timbuktu") == []
    assert await index_rows(store, "timbuktu") == 0, "forget-me removes the index rows too"
    assert await index_rows(store, "zanzibar") == 2, "other people's and other rooms' rows stay"

    await store.reset(here)
    assert await store.search(here, "quixotic") == []
    assert await index_rows(store, "quixotic") == 0, "reset removes the index rows too"
    assert [hit.text for hit in await store.search(there, "zanzibar")] == ["Zanzibar, again"]


def test_query_terms_drop_common_words_and_bound_the_query():
    assert query_terms("Where does Ann's cat, Marmalade, live?? cat") == ["ann", "cat", "marmalade", "live"]
    assert len(query_terms(" ".join(f"word{i}" for i in range(1000)))) == 24
    assert fts5_query(['a"b']) == '"a""b"' and tsquery(["it's"]) == "'it''s'"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_database_at_0003_with_messages_is_indexed_on_upgrade(tmp_path, backend):
    path = tmp_path / "old.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "0003")
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # written by the 0003 schema, before any index existed
        conn.execute(text("INSERT INTO conversations (id, platform, room_id, thread_id, created_at)"
                          " VALUES (1, 'test', 'old', '', '2025-01-01 10:00:00')"))
        conn.execute(text("INSERT INTO messages (id, conversation_id, role, author_id, author_name, text, created_at,"
                          " edited, deleted) VALUES (1, 1, 'user', 'u', 'Old Ann', 'my passport is in the blue box',"
                          " '2025-01-01 10:00:01', 0, 0)"))
    engine.dispose()
    store = MemoryStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        hits = await store.search(1, "where is the passport?")
        assert [(hit.message_id, hit.speaker) for hit in hits] == [(1, "Old Ann")]
        assert hits[0].created_at.year == 2025
    finally:
        await store.close()
