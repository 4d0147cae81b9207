"""kill -9 in the middle of a summary compaction: the database stays whole and loses nothing.

A compaction asks the real model for a summary (seconds of work) and then writes it in
one short transaction. A child process runs the engine's own compaction path on a real
SQLite file and is killed with SIGKILL at three points: while the model writes the
summary, inside the summary's write transaction (flushed, not committed), and just after
the commit. Each point is reached deterministically: the child prints a marker there and,
where the work would otherwise race past it, waits to be killed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memory import ConversationKey, MemoryStore

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SMOL = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
MESSAGES = 16
SEED_COVERS = 4  # the seed summary, committed before the compaction, covers the first 4 messages

CHILD = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bot import App
from config import HearthConfig
from engine.types import Author, IncomingMessage, RoomRef

KILL_AT = {kill_at!r}


def say(*parts):
    print(*parts, flush=True)


def hold_summary_commit(_conn, _cursor, statement, _params, _context, _executemany):
    # Inside the summary's transaction: its upsert has run in SQLite, the commit has not.
    if KILL_AT == "committing" and statement.lstrip().upper().startswith("INSERT INTO SUMMARIES"):
        say("IN_TRANSACTION")
        time.sleep(600)  # blocks the whole child: nothing can commit before the kill


async def main():
    config = HearthConfig.model_validate({{
        "model": {{"models_dir": {models!r}, "n_threads": 2, "n_ctx": 1024, "state_cache_dir": None}},
        "database": {{"url": {url!r}}},
        "personas": {{"dir": {personas!r}}},
        "memory": {{"summary_max_tokens": 16}},  # a short answer: the test is about the write
    }})
    app = App.build(config)
    await app.start()
    conversation = app.conversation
    ref = RoomRef("console", "kill")
    for i in range({messages}):
        user = i % 3
        msg = IncomingMessage(ref, Author(f"u{{user}}", f"User{{user}}"),
                              f"Message {{i}}: the ferry to Dunhollow leaves at {{i % 12 + 1}} o'clock.",
                              message_id=f"m{{i}}")
        await conversation.remember(msg)  # stored as context, no reply: a committed append
    room = await conversation.room(ref)
    stored = await app.store.messages(room.conversation_id)
    for message in stored:
        say("MESSAGE", message.id)
    seed = await app.store.save_summary(room.conversation_id, "Seed summary.", stored[{seed} - 1].id)
    say("SEED", seed.covers_through_id)

    write_summary = conversation.summarizer.write_summary

    async def traced_write(previous, messages, max_tokens):
        say("GENERATING")
        return await write_summary(previous, messages, max_tokens)

    conversation.summarizer.write_summary = traced_write
    save_summary = app.store.save_summary

    async def traced_save(conversation_id, text, covers_through_id):
        say("SAVING")
        summary = await save_summary(conversation_id, text, covers_through_id)
        say("SAVED", summary.covers_through_id)
        if KILL_AT == "saved":
            await asyncio.sleep(600)
        return summary

    app.store.save_summary = traced_save
    event.listen(Engine, "after_cursor_execute", hold_summary_commit)
    await conversation.schedule_summary(room, force=True)  # the engine's own compaction path
    await conversation.scheduler.wait_idle()
    say("FINISHED")  # the kill came too late: the test reports it


asyncio.run(main())
"""


def run_child(tmp_path: Path, db_url: str, kill_at: str) -> tuple[dict[str, list[str]], int, str]:
    """Start the child, SIGKILL it at ``kill_at``; returns its marker lines, exit code and stderr."""
    script = CHILD.format(
        root=str(ROOT), models=str(MODELS), url=db_url, personas=str(tmp_path / "personas"),
        kill_at=kill_at, messages=MESSAGES, seed=SEED_COVERS,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    trigger = {"generating": "GENERATING", "committing": "IN_TRANSACTION", "saved": "SAVED"}[kill_at]
    seen: dict[str, list[str]] = {}
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:
            marker, _, rest = line.strip().partition(" ")
            seen.setdefault(marker, []).append(rest)
            if marker == trigger:  # the model call or the transaction is under way: kill now
                os.kill(proc.pid, signal.SIGKILL)
                break
            if marker == "FINISHED" or time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        rest, err = proc.communicate(timeout=60)
    for line in rest.splitlines():  # printed before the kill landed
        marker, _, value = line.strip().partition(" ")
        seen.setdefault(marker, []).append(value)
    return seen, proc.returncode, err


@pytest.mark.parametrize("kill_at", ["generating", "committing", "saved"])
async def test_sigkill_during_compaction_keeps_everything_committed(tmp_path, db_path, sqlite_url, kill_at):
    db_url = sqlite_url
    if not SMOL.is_file():
        pytest.fail(f"{SMOL.name} is missing: run `make test` (it pulls the models)")
    seen, returncode, err = run_child(tmp_path, db_url, kill_at)
    assert returncode == -signal.SIGKILL, f"the child ended by itself ({returncode}): {err[-2000:]}"
    committed = [int(i) for i in seen.get("MESSAGE", [])]
    assert len(committed) == MESSAGES, f"the child did not write its conversation: {err[-2000:]}"
    assert "GENERATING" in seen, f"the compaction never asked the model: {err[-2000:]}"
    assert "FINISHED" not in seen
    saved = "SAVED" in seen
    assert ("SAVING" in seen) == (kill_at != "generating"), f"killed at the wrong point: {sorted(seen)}"
    assert saved == (kill_at == "saved"), f"killed at the wrong point: {sorted(seen)}"

    with sqlite3.connect(db_path) as conn:  # the raw file, before hearth touches it again
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    store = MemoryStore(db_url)
    await store.start()
    try:
        room = await store.find_conversation(ConversationKey("console", "kill"))
        assert room is not None
        stored = await store.messages(room)
        missing = set(committed) - {m.id for m in stored}
        assert not missing, f"committed messages lost to the kill at {kill_at}: {sorted(missing)}"
        assert all(m.text.startswith("Message ") for m in stored), "no torn or emptied rows"

        summary = await store.summary(room)
        assert summary is not None, "the committed seed summary was lost"
        if saved:  # committed before the kill: the new summary must be there, whole
            assert summary.covers_through_id == int(seen["SAVED"][0]) > int(seen["SEED"][0])
            assert summary.text and summary.text != "Seed summary."
        else:  # nothing of the unfinished compaction may show
            assert (summary.text, summary.covers_through_id) == ("Seed summary.", int(seen["SEED"][0]))
        assert not summary.stale

        # the store works: a new message, a new summary, both read back
        after = await store.append(room, role="user", author_id="u", author_name="U", text="after the crash")
        assert after.id > max(committed)
        assert (await store.messages(room, last=1))[0].text == "after the crash"
        await store.save_summary(room, "Rewritten after the crash.", after.id)
        assert (await store.summary(room)).covers_through_id == after.id
        assert await store.count_messages(room) == MESSAGES + 1
    finally:
        await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
