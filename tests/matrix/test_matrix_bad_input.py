"""The bad-input corpus through Matrix, against the real Synapse, in one room.

Alice creates the room (power 100: a room manager, not an operator), turns replies off and
sends every classic line (stored, not answered). The bot's own account then posts commands
from another device: the bot must ignore its own messages, and because its id is an operator
here, running one would unload the model. Hostile ``!hearth`` arguments get one-line notices,
and a near-limit line mentioning the bot is cut to the window and answered. Afterwards the bot
answers ``!hearth stats`` with its model loaded, memory holds every message, the log has no
traceback, and SQLite's integrity check is ok.

Synapse refuses events over 64 KiB, so the 100k emoji and the 200 KB line become the largest
texts an event can carry (the engine and console tests send them whole).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nio import AsyncClient

from engine.types import RoomRef
from tests.bad_input_corpus import BAD_COMMANDS, CLASSIC, INJECTION, LINE_200KB, no_traceback, stored_form

from .bot import Bot, bot_config, start_bot
from .harness import send_text, wait_for_event
from .synapse import MatrixAccount, SynapseServer
from .test_matrix_bot import group_room, mention, reply_events

pytestmark = pytest.mark.timeout(240)
MODEL = "smollm2-135m-instruct"
EVENT_SAFE_CHARS = 14_000  # 4-byte emoji: 56 KB, under Synapse's 64 KiB event limit
NEAR_LIMIT_LINE = LINE_200KB[:60_000]
# Synapse answers 500 to a lone surrogate (it cannot encode the event), so no bot can receive one.
PLATFORM_REFUSED = {"surrogates"}


def matrix_corpus() -> dict[str, str]:
    corpus = dict(CLASSIC)
    corpus["emoji_100k"] = CLASSIC["emoji_100k"][:EVENT_SAFE_CHARS]
    return corpus


@pytest_asyncio.fixture
async def bot(
    synapse: SynapseServer, matrix_account: Callable[..., MatrixAccount], tmp_path: Path, smol_path: Path
) -> AsyncIterator[Bot]:
    """A bot whose own id is an operator, on a small window, without rate limits."""
    account = matrix_account("hearth")
    config = bot_config(synapse, account, tmp_path, admins=[account.user_id])
    config["model"]["n_ctx"] = 512
    config["limits"] = {"user_messages_per_minute": 0, "room_replies_per_minute": 0}
    config["memory"] = {"summary_max_tokens": 16}
    started = await start_bot(config)
    started.account = account
    yield started
    await started.close()


def answers(bot_id: str, event_id: str) -> Callable[[Any], bool]:
    """The bot's notice replying to ``event_id``."""

    def check(event: Any) -> bool:
        source = event.source
        relates = source.get("content", {}).get("m.relates_to", {})
        return source.get("sender") == bot_id and relates.get("m.in_reply_to", {}).get("event_id") == event_id

    return check


async def command(user: AsyncClient, room_id: str, bot: Bot, line: str) -> str:
    """Send ``!hearth line`` and return the bot's one notice in reply."""
    event_id = await send_text(user, room_id, f"!hearth {line}")
    event = await wait_for_event(user, room_id, answers(bot.user_id, event_id), timeout=60)
    return event.source["content"]["body"]


async def test_bad_input_corpus_through_matrix(bot: Bot, matrix_user, synapse: SynapseServer, caplog):
    caplog.set_level(logging.WARNING)
    alice, bob = await matrix_user("alice"), await matrix_user("bob")
    room_id = await group_room(alice, bot, [bob])
    assert "trigger set to off" in await command(alice, room_id, bot, "settings set trigger off")

    sent: list[str] = []
    refused: list[str] = []
    for name, text in matrix_corpus().items():
        try:
            await send_text(alice, room_id, text)
        except AssertionError:  # the homeserver would not take it: it never reaches any bot
            refused.append(name)
            continue
        sent.append(text)
    assert set(refused) <= PLATFORM_REFUSED, refused

    # the bot's own account, on another device, posts commands: the bot never runs its own text
    own = AsyncClient(synapse.url, bot.user_id)
    own.restore_login(bot.user_id, bot.account.device_id, bot.account.access_token)
    try:
        await send_text(own, room_id, INJECTION)
        await send_text(own, room_id, "!hearth model unload")
    finally:
        await own.close()

    for line in BAD_COMMANDS:
        notice = await command(alice, room_id, bot, line)
        assert no_traceback(notice) and "unexpectedly" not in notice, (line[:60], notice)
        assert "\n" not in notice.strip(), (line[:60], notice)
    host = bot.app.host
    assert host.loaded and host.entry.name == MODEL, "a command unloaded or swapped the model"

    assert "trigger set to mention" in await command(alice, room_id, bot, "settings set trigger mention")
    question = await send_text(alice, room_id, f"{bot.user_id}: {NEAR_LIMIT_LINE}", **mention(bot.user_id))
    events = await reply_events(alice, room_id, bot.user_id, question)
    final = events[-1]["content"].get("m.new_content", events[-1]["content"])["body"]
    assert final.strip() and not final.startswith("⚠️"), final
    assert f"model: {MODEL}" in await command(alice, room_id, bot, "stats")

    conversation = bot.app.conversation
    room = await conversation.room(RoomRef("matrix", room_id))
    stored = await bot.app.store.messages(room.conversation_id)
    users = [m.text for m in stored if m.role == "user"]
    assert users == [stored_form(t).strip() for t in sent] + [NEAR_LIMIT_LINE.strip()], "a message was lost or cut"
    assert all(m.author_id != bot.user_id for m in stored if m.role == "user"), "the bot stored its own message"
    settings = await bot.app.store.room_settings(room.conversation_id)
    assert settings.persona is None and not settings.extra.get("lore")
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    with sqlite3.connect(tmp_db(bot)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def tmp_db(bot: Bot) -> str:
    return bot.app.config.database.url.removeprefix("sqlite+aiosqlite:///")
