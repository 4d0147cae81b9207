"""The bad-input corpus through Discord: dpytest messages and the real ``/hearth`` callbacks.

One session in one channel: a room manager turns replies off, a plain member sends every
classic line (stored, not answered), the bot's own message carrying commands is ignored,
hostile slash-command arguments get one-line refusals, and then the 200 KB line mentioning
the bot is cut to the window and answered. Afterwards the bot answers ``/hearth stats`` with
its model still loaded, memory holds every message, and SQLite's integrity check is ok.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import discord.ext.test as dpytest
import discord.ext.test.backend as back
import pytest
import pytest_asyncio

from adapters.discord_commands import find_command
from adapters.discord_mapping import room_for
from adapters.rendering import UNFINISHED_MARKER
from tests.bad_input_corpus import CLASSIC, INJECTION, LINE_200KB, MACROS, no_traceback, stored_form
from tests.conftest import MODELS
from tests.discord.conftest import FakeInteraction, Harness, _build, _cleanup, _start, short_persona_dir

pytestmark = pytest.mark.timeout(240)
MODEL = "smollm2-135m-instruct"
CRASHED = ("unexpectedly", "details are in the log")
# (slash path, options): arguments that try paths, devices, open quotes, bad macros and sheer length
BAD_SLASH = [
    ("persona set", {"name": "../../etc/passwd"}),
    ("persona show", {"name": "../../../etc/passwd"}),
    ("model load", {"name": "/dev/zero"}),
    ("model load", {"name": "../../x.gguf"}),
    ("model info", {"name": "/dev/zero"}),
    ("persona set", {"name": '"unclosed'}),
    ("settings set", {"key": "top_p", "value": "1e999"}),
    ("lore add", {"keys": "dice", "text": "{{roll:999999999d9}}"}),
    ("lore add", {"keys": "x", "text": MACROS.replace(" {{nope}}", "") + " {{nope"}),
    ("lore remove", {"number": 2**62}),
    ("persona set", {"name": "a" * 5000}),
]


@pytest_asyncio.fixture
async def harness(tmp_path: Path, smol_path: Path) -> AsyncIterator[Harness]:
    """The adapter on dpytest, on a real engine with a small window and no rate limits."""
    from bot import App
    from config import HearthConfig

    config = HearthConfig.model_validate(
        {
            "model": {"models_dir": str(MODELS), "n_threads": 2, "n_ctx": 512, "state_cache_dir": f"{tmp_path}/states"},
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"},
            "personas": {"dir": str(short_persona_dir(tmp_path))},
            "limits": {"user_messages_per_minute": 0, "room_replies_per_minute": 0},
            "memory": {"summary_max_tokens": 16},
        }
    )
    app = App.build(config)
    await app.start()
    made, client = _build(app.conversation, {})
    await _start(made, client, None, None)
    yield made
    await _cleanup([made])
    await app.close()


async def until_answered(harness: Harness) -> None:
    """Until the reply is finished and stored; not ``settle()``, which would also wait out the
    summary the 200 KB line sets off (minutes of background work on a busy machine)."""
    channel = harness.channel()
    async with asyncio.timeout(180):
        while True:
            await dpytest.run_all_events()
            stored = await harness.stored(channel)
            texts = harness.bot_texts(channel)
            if stored[-1].role == "assistant" and not texts[-1].endswith(UNFINISHED_MARKER.strip()):
                return
            await asyncio.sleep(0.1)


async def slash(harness: Harness, user: Any, path: str, **options: Any) -> FakeInteraction:
    interaction = FakeInteraction(user, harness.channel())
    await find_command(harness.adapter.hearth, path).callback(interaction, **options)
    return interaction


async def test_bad_input_corpus_through_discord(harness: Harness, caplog, tmp_path: Path):
    caplog.set_level(logging.WARNING)
    channel, alice = harness.channel(), harness.member(0)
    role = back.make_role("Managers", harness.guild, permissions=discord.Permissions(manage_guild=True).value)
    back.update_member(harness.member(1), roles=[role])
    manager = harness.guild.get_member(harness.member(1).id)
    harness.adapter.config.admin_users.append(str(manager.id))  # an operator too: the deepest checks run
    host = harness.adapter.conversation.host

    off = await slash(harness, manager, "settings set", key="trigger", value="off")
    assert "trigger set to off" in off.text

    for text in CLASSIC.values():
        await harness.say(text, member=alice)
    # the bot's own message that carries commands is never read, let alone run
    back.make_message(INJECTION, harness.guild.me, channel)
    await harness.settle()
    assert harness.bot_texts(channel) == [INJECTION], "the bot answered something"
    assert host.loaded and host.entry.name == MODEL

    for user in (alice, manager):
        for path, options in BAD_SLASH:
            interaction = await slash(harness, user, path, **options)
            answer = interaction.text
            assert answer.strip() and no_traceback(answer), (path, answer)
            assert not any(word in answer for word in CRASHED), (path, answer)
            assert all(item.ephemeral for item in interaction.sent), (path, answer)
    assert host.loaded and host.entry.name == MODEL
    conversation = harness.adapter.conversation
    room = await conversation.room(room_for(channel))
    settings = await conversation.store.room_settings(room.conversation_id)
    assert settings.persona is None and not settings.extra.get("lore")

    on = await slash(harness, manager, "settings set", key="trigger", value="mention")
    assert "trigger set to mention" in on.text
    back.make_message(f"<@{harness.bot.id}> {LINE_200KB}", alice, channel)
    await until_answered(harness)
    texts = harness.bot_texts(channel)
    assert len(texts) == 3, texts  # the injection, the one-line "too long" notice, the reply
    assert "too long to read whole" in texts[1], texts[1]
    assert texts[-1].strip() and not texts[-1].startswith("⚠️"), texts[-1]

    stats = await slash(harness, alice, "stats")
    assert f"model: {MODEL}" in stats.text

    stored = await harness.stored(channel)
    users = [m.text for m in stored if m.role == "user"]
    assert users == [stored_form(t) for t in CLASSIC.values()] + [LINE_200KB.strip()], "a message was lost or cut"
    assert stored[-1].role == "assistant"
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    with sqlite3.connect(tmp_path / "hearth.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
