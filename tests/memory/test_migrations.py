"""Alembic migrations: an old database is upgraded in place, atomically, with its rows intact."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from errors import StorageError
from memory import ConversationKey, MemoryStore
from memory.database import open_engine, parse_url
from memory.migrate import MIGRATIONS_DIR, alembic_config, current_revision, head_revision, upgrade


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def alembic_current(path: Path) -> str | None:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    finally:
        engine.dispose()


def test_there_are_at_least_two_migrations_in_one_line():
    revisions = list(ScriptDirectory.from_config(alembic_config()).walk_revisions())
    assert len(revisions) >= 2
    assert revisions[-1].revision == "0001" and revisions[-1].down_revision is None
    assert head_revision() == revisions[0].revision != "0001"


async def test_a_database_at_0001_is_upgraded_with_its_rows_intact(tmp_path):
    path = tmp_path / "old.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "0001")
    assert alembic_current(path) == "0001"
    assert {"conversations", "messages", "summaries"} <= tables(path)
    assert not {"room_settings", "users", "platform_state"} & tables(path)

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # rows written by the old schema, in raw SQL as an old hearth would have
        conn.execute(
            text(
                "INSERT INTO conversations (id, platform, room_id, thread_id, created_at) "
                "VALUES (1, 'discord', 'old-room', '', '2025-01-01 10:00:00')"
            )
        )
        for i, pid in enumerate(("p1", "p2")):
            conn.execute(
                text(
                    "INSERT INTO messages (id, conversation_id, role, author_id, author_name, text,"
                    " platform_message_id, created_at)"
                    " VALUES (:id, 1, 'user', 'u', 'Old User', :text, :pid, '2025-01-01 10:00:0' || :id)"
                ),
                {"id": i + 1, "text": f"written by schema 0001 #{i}", "pid": pid},
            )
        conn.execute(
            text(
                "INSERT INTO summaries (conversation_id, text, covers_through_id, updated_at) "
                "VALUES (1, 'an old summary', 1, '2025-01-01 10:00:05')"
            )
        )
    engine.dispose()

    store = MemoryStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        room = await store.find_conversation(ConversationKey("discord", "old-room"))
        assert room == 1
        old = await store.messages(room)
        assert [m.text for m in old] == ["written by schema 0001 #0", "written by schema 0001 #1"]
        assert old[0].created_at.year == 2025 and old[0].created_at.tzinfo is not None
        assert not old[0].edited and not old[0].deleted, "server defaults of 0001 read back as False"
        summary = await store.summary(room)
        assert (summary.text, summary.covers_through_id, summary.stale) == ("an old summary", 1, False)
        await store.edit_message(room, "p1", "edited after the upgrade")
        assert (await store.summary(room)).stale
        new = await store.append(room, role="assistant", author_id="bot", author_name="B", text="new")
        assert new.id == 3
        await store.update_room_settings(room, persona="companion")  # tables of 0002 work
        await store.set_state("discord", "k", "v")
        assert (await store.room_settings(room)).persona == "companion"
    finally:
        await store.close()
    assert alembic_current(path) == head_revision()
    assert "leases" in tables(path) and "users" not in tables(path), "0003 dropped the never-written users table"


async def test_start_on_a_fresh_file_lands_on_head_and_again_is_a_no_op(tmp_path):
    path = tmp_path / "fresh.db"
    for _ in range(2):
        store = MemoryStore(f"sqlite+aiosqlite:///{path}")
        await store.start()
        await store.close()
        assert alembic_current(path) == head_revision()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_downgrade_to_base_and_back_up(tmp_path):
    url = f"sqlite:///{tmp_path}/roundtrip.db"
    command.upgrade(alembic_config(url), "head")
    command.downgrade(alembic_config(url), "base")
    assert tables(tmp_path / "roundtrip.db") <= {"alembic_version"}
    command.upgrade(alembic_config(url), "head")
    assert alembic_current(tmp_path / "roundtrip.db") == head_revision()


def test_the_scripts_also_run_from_an_async_url(tmp_path):
    """alembic's own CLI path: env.py given an aiosqlite URL instead of a live connection."""
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{tmp_path}/async.db"), "head")
    assert alembic_current(tmp_path / "async.db") == head_revision()


async def test_a_database_from_a_newer_hearth_is_refused_clearly(tmp_path):
    path = tmp_path / "future.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "head")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StorageError, match="newer version"):
        await MemoryStore(f"sqlite+aiosqlite:///{path}").start()


def extra_migration(tmp_path: Path, body: str) -> Path:
    """A copy of the real scripts plus one more revision after head."""
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9000_test.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = '9000'\ndown_revision = {head_revision()!r}\nbranch_labels = None\ndepends_on = None\n\n"
        f"def upgrade():\n{body}\n\ndef downgrade():\n    pass\n"
    )
    return scripts


async def seeded(path: Path) -> int:
    store = MemoryStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    room = await store.conversation_id(ConversationKey("console", "kept"))
    for i in range(3):
        await store.append(room, role="user", author_id="u", author_name="U", text=f"m{i}")
    await store.close()
    return room


async def test_a_failing_migration_leaves_no_half_done_schema(tmp_path):
    path = tmp_path / "atomic.db"
    await seeded(path)
    scripts = extra_migration(
        tmp_path,
        (
            "    op.create_table('doomed', sa.Column('id', sa.Integer, primary_key=True))\n"
            '    op.execute("DELETE FROM messages")\n'
            "    raise RuntimeError('migration bug')"
        ),
    )
    engine = open_engine(parse_url(f"sqlite+aiosqlite:///{path}"))
    try:
        with pytest.raises(RuntimeError, match="migration bug"):
            await upgrade(engine, config=alembic_config(script_location=scripts))
    finally:
        await engine.dispose()
    assert "doomed" not in tables(path), "the new table was rolled back"
    assert alembic_current(path) == head_revision()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 3


async def test_a_batch_rebuild_of_conversations_does_not_cascade_into_messages(tmp_path):
    """SQLite batch mode drops and recreates the table; with foreign keys on, that drop would
    cascade-delete every message. The runner turns them off for the migration."""
    path = tmp_path / "batch.db"
    room = await seeded(path)
    scripts = extra_migration(
        tmp_path,
        (
            "    with op.batch_alter_table('conversations', recreate='always') as batch:\n"
            "        batch.add_column(sa.Column('title', sa.String(100), nullable=True))"
        ),
    )
    engine = open_engine(parse_url(f"sqlite+aiosqlite:///{path}"))
    try:
        await upgrade(engine, config=alembic_config(script_location=scripts))
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1, "back on afterwards"
    finally:
        await engine.dispose()
    assert alembic_current(path) == "9000"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM messages WHERE conversation_id = ?", (room,)).fetchone()[0] == 3
        assert "title" in {r[1] for r in conn.execute("PRAGMA table_info(conversations)")}


async def pg_tables(url: str) -> set[str]:
    engine = open_engine(parse_url(url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            return {r[0] for r in rows}
    finally:
        await engine.dispose()


async def test_an_empty_postgresql_database_migrates_to_head_down_and_up(pg_url):
    assert await pg_tables(pg_url) == set(), "the fixture hands out an empty database"
    store = MemoryStore(pg_url)
    await store.start()
    try:
        async with store.engine.connect() as conn:
            assert await conn.run_sync(current_revision) == head_revision()
        room = await store.conversation_id(ConversationKey("matrix", "!pg"))
        await store.append(room, role="user", author_id="u", author_name="U", text="on postgres")
    finally:
        await store.close()
    assert {"conversations", "messages", "summaries", "room_settings", "platform_state", "leases"} <= await pg_tables(
        pg_url
    )
    assert "users" not in await pg_tables(pg_url)
    # alembic's own CLI path on PostgreSQL (env.py runs its own event loop, so off this one)
    await asyncio.to_thread(command.downgrade, alembic_config(pg_url), "base")
    assert await pg_tables(pg_url) <= {"alembic_version"}
    await asyncio.to_thread(command.upgrade, alembic_config(pg_url), "head")
    again = MemoryStore(pg_url)
    await again.start()  # at head already: a no-op
    try:
        assert await again.find_conversation(ConversationKey("matrix", "!pg")) is None, "downgrade dropped the rows"
    finally:
        await again.close()


async def test_processes_starting_together_on_an_empty_postgresql_database_migrate_once(pg_url):
    """N bot processes started at once: the advisory lock lets one migrate while the others wait."""
    stores = [MemoryStore(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        rooms = await asyncio.gather(*(s.conversation_id(ConversationKey("discord", "same")) for s in stores))
        assert len(set(rooms)) == 1
    finally:
        for s in stores:
            await s.close()
