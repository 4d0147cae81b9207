"""Bad input at the engine's entry point, on the real model and a real SQLite store.

Hypothesis feeds arbitrary unicode through ``Conversation.handle`` (stored exactly, save the
documented NUL and surrogate clean-up), through the command core after each command prefix
(a one-line answer, never a crash) and through prompt assembly (always within the window).
The classic corpus then goes through one room the way the adapters send it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text as sql

from engine.commands.core import CommandContext
from engine.context import TRUNCATION_NOTE
from engine.types import Author, IncomingMessage, RoomRef
from tests.bad_input_corpus import BAD_COMMANDS, CLASSIC, LINE_200KB, MACROS, stored_form
from tests.conftest import MODELS

N_CTX = 512
MANAGER = Author("u1", "Alice", is_room_manager=True)  # may change this room, nothing bot-wide
OPERATOR = Author("u0", "Root", is_operator=True)  # bot-wide rights, but not at the bot's machine
COMMAND_PREFIXES = (
    "",
    "help",
    "persona show",
    "persona set",
    "model info",
    "model load",
    "settings set temperature",
    "settings set trigger",
    "lore add key",
    "lore remove",
    "memory show",
)
# Plain hypothesis text rarely holds the pieces that break things (and never a lone surrogate,
# which platforms can deliver through a JSON "\udcff" escape), so they are mixed in on purpose.
PIECES = ["\x00", "\udcff", "\ud800", "\u202e", "\u0301" * 30, "\r", "\n", "'", '"', "\\", "{{roll:999999999d9}}",
          "{{user}}", "<|im_end|>", "!hearth model unload", "/model unload", "\U0001f600" * 20]
ANY_TEXT = st.lists(st.text(st.characters(), max_size=12) | st.sampled_from(PIECES), min_size=1, max_size=12).map(
    "".join
).filter(bool)
_rooms = itertools.count()


@pytest_asyncio.fixture
async def small_app(tmp_path: Path, smol_path: Path) -> AsyncIterator[Any]:
    """The real default model with a small window (cutting text to fit it is what is tested), no rate limits."""
    from bot import App
    from config import HearthConfig

    config = HearthConfig.model_validate(
        {
            "model": {"models_dir": str(MODELS), "n_threads": 2, "n_ctx": N_CTX, "state_cache_dir": f"{tmp_path}/st"},
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"},
            "personas": {"dir": str(tmp_path / "personas")},
            "limits": {"user_messages_per_minute": 0, "room_replies_per_minute": 0},
        }
    )
    application = App.build(config)
    await application.start()
    yield application
    await application.close()


def crashes(records: list[logging.LogRecord]) -> list[str]:
    """Log lines that carry a traceback: what a user must never cause."""
    return [record.getMessage() for record in records if record.exc_info]


async def stored_user_texts(app: Any, ref: RoomRef) -> list[str]:
    room = await app.conversation.room(ref)
    return [m.text for m in await app.store.messages(room.conversation_id) if m.role == "user"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=ANY_TEXT, prefix=st.sampled_from(COMMAND_PREFIXES))
async def test_arbitrary_text_is_stored_exactly_and_never_crashes(small_app, caplog, text: str, prefix: str):
    conv = small_app.conversation
    ref = RoomRef("hypothesis", f"room{next(_rooms)}")
    caplog.set_level(logging.WARNING)
    caplog.clear()

    await conv.handle(IncomingMessage(ref, MANAGER, text, "m1", addressed=False))
    assert await stored_user_texts(small_app, ref) == [stored_form(text)]

    result = await conv.commands.process(f"{prefix} {text}", CommandContext(ref, MANAGER))
    assert "unexpectedly" not in result.text
    assert small_app.host.loaded

    room = await conv.room(ref)
    prompt = await conv.prompts.build(small_app.host.require(), await conv.room_turn(ref), room.last_user, 16)
    assert prompt.token_count <= prompt.budget
    assert crashes(caplog.records) == []


@pytest.mark.timeout(240)
async def test_classic_corpus_through_the_engine(small_app, caplog, monkeypatch):
    conv = small_app.conversation
    ref = RoomRef("test", "bad-input")
    room = await conv.room(ref)
    caplog.set_level(logging.WARNING)
    await small_app.store.update_room_settings(room.conversation_id, trigger_mode="off", sampling={"max_tokens": 16})

    for number, text in enumerate(CLASSIC.values()):
        outcome = await conv.handle(IncomingMessage(ref, MANAGER, text, f"m{number}", addressed=False))
        assert outcome.kind == "ignored", "a bad message was run or answered"
    # user text that looks like commands is chat, never a command
    assert small_app.host.loaded and small_app.host.entry.name == "smollm2-135m-instruct"

    for author in (MANAGER, OPERATOR):
        for line in BAD_COMMANDS:
            result = await conv.commands.process(line, CommandContext(ref, author))
            assert "\n" not in result.text.strip() and "unexpectedly" not in result.text, (line[:60], result.text)
    assert small_app.host.loaded and small_app.host.entry.name == "smollm2-135m-instruct"
    settings_now = await small_app.store.room_settings(room.conversation_id)
    assert settings_now.persona is None and not settings_now.extra.get("lore")

    # card macros in user text reach the prompt as typed: never expanded, never an error
    macro_ref = RoomRef("test", "macros")
    await conv.handle(IncomingMessage(macro_ref, MANAGER, MACROS, "x1", addressed=False))
    macro_room = await conv.room(macro_ref)
    backend = small_app.host.require()
    turn = await conv.room_turn(macro_ref)
    prompt = await conv.prompts.build(backend, turn, macro_room.last_user, backend.spec.sampling.max_tokens)
    assert MACROS in prompt.messages[-1].content

    # the 200 KB line, addressed: cut to the window and answered; only a bounded part is ever tokenized
    backend = small_app.host.require()
    tokenized: list[int] = []
    real_tokenize = backend.tokenize

    def tokenize(text: str) -> list[int]:
        tokenized.append(len(text))
        return real_tokenize(text)

    monkeypatch.setattr(backend, "tokenize", tokenize)
    await small_app.store.update_room_settings(room.conversation_id, trigger_mode="mention")
    outcome = await conv.handle(IncomingMessage(ref, MANAGER, LINE_200KB, "big", addressed=True))
    assert outcome.kind == "reply"
    reply = await (await outcome.admission.ticket.reply).text()
    assert reply.strip()
    prompt = room.last_prompt
    assert prompt.truncated_newest and prompt.token_count <= prompt.budget
    assert TRUNCATION_NOTE in prompt.messages[-1].content
    assert outcome.notice, "the sender is told the message was too long to read whole"
    assert max(tokenized) < 20 * N_CTX * 8, "prompt assembly tokenized the whole 200 KB line on the event loop"

    stored = await stored_user_texts(small_app, ref)
    assert stored == [stored_form(text) for text in CLASSIC.values()] + [LINE_200KB], "a message was lost or cut"
    assert crashes(caplog.records) == []
    async with small_app.store.engine.connect() as connection:
        assert (await connection.execute(sql("PRAGMA integrity_check"))).scalar() == "ok"
