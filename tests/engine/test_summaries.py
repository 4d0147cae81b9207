"""A room driven past its context window several times: summaries appear, nothing is lost."""

from __future__ import annotations

import pytest_asyncio

from bot import App
from config import HearthConfig
from engine.context import SUMMARY_HEADER
from engine.types import Author, IncomingMessage, RoomRef
from tests.conftest import MODELS

ROOM = RoomRef("test", "long-chat")
FACTS = ["my cat is named Pixel", "I work as a baker", "my sister lives in Oslo", "I play the cello",
         "my favourite colour is teal", "I grew up near the sea", "I am learning Japanese"]


def make_config(tmp_path) -> HearthConfig:
    return HearthConfig.model_validate(
        {
            "model": {
                "models_dir": str(MODELS),
                "n_ctx": 512,
                "n_threads": 2,
                "sampling": {"max_tokens": 24},
                "state_cache_dir": str(tmp_path / "states"),
            },
            "memory": {"summarize_at": 0.6, "keep_recent_turns": 4, "summary_max_tokens": 60},
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"},
            "personas": {"dir": str(tmp_path / "personas")},
        }
    )


@pytest_asyncio.fixture
async def small_app(tmp_path, smol_path):
    app = App.build(make_config(tmp_path))
    await app.start()
    yield app
    await app.close()


async def test_long_chat_compacts_and_keeps_every_message(small_app, tmp_path):
    conv = small_app.conversation
    sent = []
    budgets = []
    for i in range(18):
        text = f"Message {i}: {FACTS[i % len(FACTS)]}, and I wanted to tell you about my day in some detail."
        sent.append(text)
        reply = await conv.reply_now(
            IncomingMessage(ROOM, Author("u1", "Ann"), text, message_id=f"m{i}", addressed=True)
        )
        await reply.text()
        await conv.scheduler.wait_idle()  # includes the low-priority compaction
        prompt = (await conv.room(ROOM)).last_prompt
        budgets.append(prompt.token_count + 24)
    room = await conv.room(ROOM)
    summary = await small_app.store.summary(room.conversation_id)
    assert summary is not None and summary.text.strip(), "older turns were folded into a summary"
    assert conv.summarizer.compactions >= 2, "the window was passed several times"
    assert max(budgets) <= 512, "prompt + reply reserve always fit n_ctx"
    stored = await small_app.store.messages(room.conversation_id)
    assert [m.text for m in stored if m.role == "user"] == sent, "no message is lost from the database"
    # The prompt holds a summary (the one current when it was built) and only the newest turns.
    system = room.last_prompt.messages[0].content
    assert SUMMARY_HEADER in system
    assert "Message 0:" not in "\n".join(m.content for m in room.last_prompt.messages[1:])


async def test_conversation_survives_a_restart(tmp_path, smol_path):
    first = App.build(make_config(tmp_path))
    await first.start()
    await (await first.conversation.reply_now(
        IncomingMessage(ROOM, Author("u1", "Ann"), "Remember: the password is swordfish.", addressed=True)
    )).text()
    room = await first.conversation.room(ROOM)
    await first.store.save_summary(room.conversation_id, "Ann shared a password.", 1)
    before = [m.text for m in await first.store.messages(room.conversation_id)]
    await first.close()

    second = App.build(make_config(tmp_path))
    await second.start()
    try:
        again = await second.conversation.room(ROOM)
        assert again.conversation_id == room.conversation_id
        assert [m.text for m in await second.store.messages(again.conversation_id)] == before
        assert (await second.store.summary(again.conversation_id)).text == "Ann shared a password."
    finally:
        await second.close()
