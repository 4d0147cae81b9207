"""The SQLite store on a real file: round trips, restarts, migrations, crashes and concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from memory import ConversationKey, MemoryStore
from memory.migrate import alembic_config, head_revision

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(tmp_path):
    s = MemoryStore(f"sqlite+aiosqlite:///{tmp_path}/mem.db")
    await s.start()
    yield s
    await s.close()


async def test_round_trip_and_restart(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/mem.db"
    store = MemoryStore(url)
    await store.start()
    room = await store.conversation_id(ConversationKey("discord", "c1"))
    thread = await store.conversation_id(ConversationKey("discord", "c1", "t9"))
    assert room != thread and room == await store.conversation_id(ConversationKey("discord", "c1"))
    first = await store.append(
        room, role="user", author_id="u1", author_name="Ann", text="hi 👋 שלום", platform_message_id="m1"
    )
    await store.append(room, role="assistant", author_id="bot", author_name="Hearth", text="hello")
    await store.save_summary(room, "Ann said hi.", first.id)
    await store.update_room_settings(room, persona="narrator", sampling={"temperature": 0.5})
    await store.set_state("matrix", "next_batch", "s123")
    await store.close()

    again = MemoryStore(url)
    await again.start()
    try:
        assert [m.text for m in await again.messages(room)] == ["hi 👋 שלום", "hello"]
        assert (await again.summary(room)).text == "Ann said hi."
        settings = await again.room_settings(room)
        assert settings.persona == "narrator" and settings.sampling == {"temperature": 0.5}
        assert await again.get_state("matrix", "next_batch") == "s123"
        assert await again.messages(thread) == []
    finally:
        await again.close()


async def test_queries_edits_and_forgetting(store):
    room = await store.conversation_id(ConversationKey("matrix", "!r"))
    ids = []
    for i in range(6):
        author = "u1" if i % 2 == 0 else "u2"
        ids.append(
            (
                await store.append(
                    room, role="user", author_id=author, author_name=author, text=f"m{i}", platform_message_id=f"p{i}"
                )
            ).id
        )
    assert [m.text for m in await store.messages(room, last=2)] == ["m4", "m5"]
    assert [m.text for m in await store.messages(room, after_id=ids[3])] == ["m4", "m5"]
    await store.save_summary(room, "summary", ids[2])
    await store.edit_message(room, "p1", "edited")
    assert (await store.summary(room)).stale, "editing a covered message makes the summary stale"
    await store.save_summary(room, "fresh", ids[2])
    await store.edit_message(room, "p4", "not covered")
    assert not (await store.summary(room)).stale
    await store.delete_message(room, "p0")
    assert (await store.summary(room)).stale
    assert "m0" not in [m.text for m in await store.messages(room)]
    assert await store.count_messages(room) == 5
    assert await store.forget_author(room, "u2") == 3
    assert {m.author_id for m in await store.messages(room, include_deleted=True)} == {"u1"}
    exported = await store.export(room)
    json.dumps(exported)
    assert [m["text"] for m in exported["messages"]] == ["m2", "not covered"]
    assert await store.reset(room) == 3
    assert await store.summary(room) is None


async def test_huge_and_odd_messages_survive(store):
    room = await store.conversation_id(ConversationKey("console", "x"))
    huge = "é" * 100_000
    odd = "Z\u0351\u0300a\u0489 RTL: \u202eabc\u202c 🏳️‍🌈 nul:\x00end"
    await store.append(room, role="user", author_id="u", author_name="U", text=huge)
    await store.append(room, role="user", author_id="u", author_name="U", text=odd)
    texts = [m.text for m in await store.messages(room)]
    assert texts[0] == huge
    assert texts[1] == odd.replace("\x00", "")


async def test_many_rooms_write_at_once_without_lock_errors(store):
    async def room_writer(n: int) -> None:
        room = await store.conversation_id(ConversationKey("discord", f"room{n}"))
        for i in range(10):
            await store.append(room, role="user", author_id="u", author_name="U", text=f"{n}-{i}")

    await asyncio.gather(*(room_writer(n) for n in range(20)))
    total = 0
    for conversation_id, _ in await store.conversations():
        total += await store.count_messages(conversation_id)
    assert total == 200


async def test_first_migration_upgrades_with_rows_intact(tmp_path):
    path = tmp_path / "old.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "0001")
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO conversations (id, platform, room_id, thread_id, created_at) "
                "VALUES (1, 'console', 'old', '', '2025-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO messages (conversation_id, role, author_id, author_name, text, created_at) "
                "VALUES (1, 'user', 'u', 'Old User', 'written by schema 0001', '2025-01-01 00:00:00')"
            )
        )
        assert "room_settings" not in {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    engine.dispose()

    store = MemoryStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        room = await store.find_conversation(ConversationKey("console", "old"))
        assert room == 1
        assert [m.text for m in await store.messages(room)] == ["written by schema 0001"]
        await store.update_room_settings(room, persona="companion")  # a table from 0002 works
        assert (await store.room_settings(room)).persona == "companion"
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()


WRITER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from memory import ConversationKey, MemoryStore

async def main():
    store = MemoryStore({url!r})
    await store.start()
    room = await store.conversation_id(ConversationKey("console", "crash"))
    i = 0
    while True:
        message = await store.append(room, role="user", author_id="u", author_name="U", text="x" * 2000 + str(i))
        print(message.id, flush=True)
        i += 1

asyncio.run(main())
"""


async def test_kill_mid_write_loses_nothing_committed(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/crash.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=str(ROOT), url=url)], stdout=subprocess.PIPE, text=True
    )
    committed: list[int] = []
    for line in proc.stdout:
        committed.append(int(line))
        if len(committed) >= 150:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for line in proc.stdout.read().splitlines():
        if line.strip():
            committed.append(int(line))

    with sqlite3.connect(tmp_path / "crash.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = MemoryStore(url)
    await store.start()
    try:
        room = await store.find_conversation(ConversationKey("console", "crash"))
        stored = {m.id for m in await store.messages(room)}
        assert set(committed) <= stored
        await store.append(room, role="user", author_id="u", author_name="U", text="after the crash")
        assert (await store.messages(room, last=1))[0].text == "after the crash"
    finally:
        await store.close()
