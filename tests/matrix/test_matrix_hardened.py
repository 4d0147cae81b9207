"""Hardened Matrix edges against the real Synapse: the edit cap, shutdown, no secret in DEBUG logs.

The edit cap runs in-process (the adapter's clock is swapped so every chunk may be shown and
only ``matrix.max_edits`` limits the edits). The secrets test runs the real ``bot.py run`` with
``logging.level: DEBUG`` and its credentials taken from the environment, then greps the log.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from itertools import count
from pathlib import Path

import pytest

from engine.types import RoomRef

from .bot import BotProcess, bot_config
from .harness import create_room, is_edit, relation, seen_events, send_text, skip_seen, sync_once, wait_for_member
from .test_matrix_bot import reply_events

pytestmark = pytest.mark.timeout(240)

EXIT_BOUND_S = 5.0


async def test_a_streamed_reply_is_edited_at_most_max_edits_times(matrix_bot, matrix_user):
    bot = await matrix_bot(max_edits=2)
    ticks = count()
    bot.adapter.clock = lambda: float(next(ticks))  # a second per look: without the cap, every chunk is an edit
    alice = await matrix_user("alice")
    room_id = await create_room(alice, invite=[bot.user_id], is_direct=True)
    await wait_for_member(alice, room_id, bot.user_id)
    skip_seen(alice, room_id)
    question = await send_text(alice, room_id, "Tell me a short story about a fox who crosses a river.")

    events = await reply_events(alice, room_id, bot.user_id, question)
    await sync_once(alice, timeout_ms=1000)  # an edit sent after the "final" one would show up now

    first = events[0]["event_id"]
    edits = [e.source for e in seen_events(alice, room_id) if is_edit(e) and relation(e).get("event_id") == first]
    assert 1 <= len(edits) <= 2, f"{len(edits)} m.replace edits for max_edits=2"
    final = edits[-1]["content"]["m.new_content"]["body"]
    room = await bot.app.conversation.room(RoomRef("matrix", room_id))
    stored = await bot.app.store.messages(room.conversation_id)
    assert stored[-1].role == "assistant" and stored[-1].text.strip() == final


def _stored_tokens(database: Path) -> list[str]:
    """Access tokens the bot keeps in its database (a password login makes one)."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT value FROM platform_state WHERE key LIKE '%/access_token'").fetchall()
    return [value for (value,) in rows if value]


@pytest.mark.parametrize("credential", ["password", "access_token"])
async def test_debug_logs_hold_no_matrix_secret(
    synapse, matrix_account, matrix_user, tmp_path, smol_path, monkeypatch, credential
):
    account = matrix_account("hearth")
    data = tmp_path / "bot"
    data.mkdir()
    config = bot_config(synapse, account, data)
    if credential == "password":
        config["matrix"]["password"] = "${HEARTH_TEST_MATRIX_SECRET}"
        monkeypatch.setenv("HEARTH_TEST_MATRIX_SECRET", account.password)
    else:
        config["matrix"].update(password=None, access_token="${HEARTH_TEST_MATRIX_SECRET}")
        monkeypatch.setenv("HEARTH_TEST_MATRIX_SECRET", account.access_token)
    config["logging"] = {"level": "DEBUG"}
    bot = BotProcess(config, data)
    await bot.start()
    try:  # one round trip, so login, sync, send and the database all log something
        alice = await matrix_user("alice")
        room_id = await create_room(alice, invite=[account.user_id], is_direct=True)
        await wait_for_member(alice, room_id, account.user_id)
        skip_seen(alice, room_id)
        question = await send_text(alice, room_id, "hello, can you hear me?")
        await reply_events(alice, room_id, account.user_id, question)
    finally:
        code = await bot.stop()
    log = bot.log.read_text(errors="replace")
    assert code == 0, bot.tail()
    assert " DEBUG " in log, "logging.level: DEBUG was not honoured, so this test shows nothing"
    secrets = {"matrix.password": account.password, "matrix.access_token": account.access_token}
    secrets |= {f"stored token {i}": token for i, token in enumerate(_stored_tokens(data / "hearth.db"))}
    leaked = [name for name, value in secrets.items() if value in log]
    assert not leaked, f"{', '.join(leaked)} appear(s) in the DEBUG log"


async def test_sigterm_while_reconnecting_exits_within_seconds(synapse, matrix_account, tmp_path, smol_path):
    """The homeserver goes away under a running bot; nio retries, and SIGTERM still ends it at once."""
    account = matrix_account("hearth")
    data = tmp_path / "bot"
    data.mkdir()
    bot = BotProcess(bot_config(synapse, account, data), data)
    await bot.start()
    try:
        synapse.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while "Timed out, sleeping" not in bot.log.read_text(errors="replace"):  # nio's retry loop
            assert loop.time() < deadline, f"the bot never noticed the homeserver was gone:\n{bot.tail()}"
            await asyncio.sleep(0.2)
        assert bot.process is not None and bot.process.returncode is None
        bot.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(bot.process.wait(), EXIT_BOUND_S)
        except TimeoutError:
            raise AssertionError(f"still running {EXIT_BOUND_S} s after SIGTERM:\n{bot.tail()}") from None
    finally:
        await bot.kill()
    assert code == 0, bot.tail()
    assert "Traceback" not in bot.log.read_text(errors="replace"), bot.tail()
