"""Crash safety on a real SQLite file, and concurrency on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from memory import ConversationKey, MemoryStore

ROOT = Path(__file__).resolve().parents[2]

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
        message = await store.append(room, role="user", author_id="u", author_name="U", text=str(i) + "x" * 4000)
        print(message.id, flush=True)  # printed only after the commit returned
        i += 1

asyncio.run(main())
"""


async def test_sigkill_mid_write_loses_nothing_committed(db_path, sqlite_url):
    db_url = sqlite_url
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=str(ROOT), url=db_url)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    committed: list[int] = []
    try:
        for line in proc.stdout:
            committed.append(int(line))
            if len(committed) >= 200:
                break
        os.kill(proc.pid, signal.SIGKILL)  # while it is still writing
    finally:
        proc.kill()
        rest, err = proc.communicate()
    committed += [int(line) for line in rest.split()]  # printed before the kill landed: committed too
    assert proc.returncode == -signal.SIGKILL
    assert len(committed) >= 200, f"the writer did not get going: {err[-2000:]}"

    with sqlite3.connect(db_path) as conn:  # the raw file, before hearth touches it again
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    store = MemoryStore(db_url)
    await store.start()
    try:
        room = await store.find_conversation(ConversationKey("console", "crash"))
        stored = {m.id: m.text for m in await store.messages(room)}
        missing = set(committed) - set(stored)
        assert not missing, f"committed ids lost in the crash: {sorted(missing)[:10]}"
        assert all(len(text) > 4000 for text in stored.values()), "no torn rows"
        after = await store.append(room, role="user", author_id="u", author_name="U", text="after the crash")
        assert after.id > max(committed)
        assert (await store.messages(room, last=1))[0].text == "after the crash"
    finally:
        await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_twenty_rooms_writing_at_once(store):
    async def room_writer(n: int) -> list[int]:
        room = await store.conversation_id(ConversationKey("discord", f"room{n}"))
        return [
            (await store.append(room, role="user", author_id=f"u{n}", author_name="U", text=f"{n}-{i}")).id
            for i in range(10)
        ]

    ids = await asyncio.gather(*(room_writer(n) for n in range(20)))
    assert len({i for batch in ids for i in batch}) == 200
    rooms = await store.conversations()
    assert len(rooms) == 20
    for conversation_id, key in rooms:
        n = key.room_id.removeprefix("room")
        assert [m.text for m in await store.messages(conversation_id)] == [f"{n}-{i}" for i in range(10)]


async def test_same_room_created_concurrently_is_one_room(store):
    key = ConversationKey("matrix", "!race")
    ids = await asyncio.gather(*(store.conversation_id(key) for _ in range(20)))
    assert len(set(ids)) == 1 and len(await store.conversations()) == 1


async def test_reads_run_while_writes_queue(store):
    room = await store.conversation_id(ConversationKey("console", "rw"))

    async def writer(i: int) -> None:
        await store.append(room, role="user", author_id="u", author_name="U", text=f"w{i}")
        await store.save_summary(room, f"after {i}", i)

    async def reader() -> int:
        return len(await store.messages(room)) + await store.count_messages(room)

    results = await asyncio.gather(*(writer(i) for i in range(30)), *(reader() for _ in range(30)))
    assert all(isinstance(r, int) for r in results[30:])
    assert await store.count_messages(room) == 30


async def test_two_stores_on_one_database_never_report_a_lock(db_url):
    """Two engines are two writers with separate locks, like two bot processes, or the bot and a CLI command.
    Read-then-write transactions must wait for the file lock, not fail with "database is locked"."""
    first, second = MemoryStore(db_url), MemoryStore(db_url)
    await first.start()
    await second.start()
    try:
        room = await first.conversation_id(ConversationKey("console", "shared"))

        async def churn(store: MemoryStore, tag: str) -> None:
            for i in range(40):
                await store.save_summary(room, f"{tag}{i}", i)
                await store.set_state("console", f"{tag}{i % 5}", f"{tag}-{i}")
                await store.append(room, role="user", author_id=tag, author_name=tag, text=f"{tag}{i}")

        await asyncio.gather(*(churn(s, f"{s_i}{k}") for s_i, s in enumerate((first, second)) for k in "abc"))
        assert await second.count_messages(room) == 240
    finally:
        await first.close()
        await second.close()
