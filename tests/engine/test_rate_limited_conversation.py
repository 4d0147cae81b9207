"""Rate limits through a real Conversation on the real model: notice once, silence, all stored."""

from __future__ import annotations

from pathlib import Path

import pytest_asyncio

from engine.commands.core import CommandContext
from engine.types import Author, IncomingMessage, RoomRef
from errors import CooldownError
from tests.conftest import MODELS

ROOM = RoomRef("console", "limits")
ALICE = Author("u1", "Alice")
BOB = Author("u2", "Bob")
CAROL = Author("u3", "Carol")
ROOT = Author("u0", "Root", is_operator=True)


class Clock:
    """The Conversation's time seam: tests move it by hand, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def build_app(tmp_path: Path, limits: dict):
    from bot import App
    from config import HearthConfig

    config = HearthConfig.model_validate(
        {
            "model": {"models_dir": str(MODELS), "n_threads": 2, "sampling": {"max_tokens": 24}},
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"},
            "personas": {"dir": str(tmp_path / "personas")},
            "limits": limits,
        }
    )
    application = App.build(config)
    application.conversation.clock = clock = Clock()
    await application.start()
    return application, clock


@pytest_asyncio.fixture
async def user_limited(tmp_path, smol_path):
    application, clock = await build_app(
        tmp_path, {"user_messages_per_minute": 6, "user_burst": 2, "room_replies_per_minute": 0}
    )
    yield application, clock
    await application.close()


@pytest_asyncio.fixture
async def room_limited(tmp_path, smol_path):
    application, clock = await build_app(
        tmp_path, {"user_messages_per_minute": 0, "user_burst": 1, "room_replies_per_minute": 1}
    )
    yield application, clock
    await application.close()


def message(text: str, author: Author = ALICE, addressed: bool = True, mid: str | None = None):
    return IncomingMessage(room=ROOM, author=author, text=text, message_id=mid, addressed=addressed)


async def stored_texts(app) -> list[str]:
    conversation_id = (await app.conversation.room(ROOM)).conversation_id
    return [m.text for m in await app.store.messages(conversation_id) if m.role == "user"]


async def test_a_user_over_the_limit_is_told_once_then_silent_and_still_stored(user_limited):
    app, clock = user_limited
    conv = app.conversation
    # Commands count: two use up the burst of 2 without generating anything.
    for _ in range(2):
        assert (await conv.run_command("help", CommandContext(ROOM, ALICE))).ok
    first = await conv.handle(message("hello, are you there?", mid="m1"))
    assert first.kind == "limited"
    assert first.notice == "slow down: you can write again in 10 s"
    silent = await conv.handle(message("hello?? answer me", mid="m2"))
    assert silent == type(silent)("limited", notice=None, retry_after=silent.retry_after)
    refused = await conv.run_command("persona set storyteller", CommandContext(ROOM, ALICE))
    assert not refused.ok and refused.ephemeral and refused.silent, "a limited command is not run, silently"
    assert (await conv.persona_for(ROOM)).name != "storyteller"
    chatter = await conv.handle(message("just talking to Bob", addressed=False, mid="m3"))
    assert chatter.kind == "ignored", "a message that asks nothing of the bot takes no token"
    try:
        await conv.reply_now(message("reply now please", mid="m4"))
        raise AssertionError("a limited message must not get a reply")
    except CooldownError as exc:
        assert exc.retry_after > 0

    # The operator is never limited, on the chat path or the command path.
    for _ in range(5):
        assert (await conv.run_command("help", CommandContext(ROOM, ROOT))).ok
    root = await conv.handle(message("hi, I am root", author=ROOT, mid="m5"))
    assert root.kind == "reply"
    await (await root.admission.ticket.reply).text()

    # Once the bucket is full again, a new limited period brings a new notice.
    clock.now += 60
    for _ in range(2):
        assert (await conv.run_command("help", CommandContext(ROOM, ALICE))).ok
    again = await conv.run_command("stats", CommandContext(ROOM, ALICE))
    assert not again.ok and again.ephemeral and not again.silent
    assert again.text == "slow down: you can write again in 10 s"

    texts = await stored_texts(app)
    for text in ("hello, are you there?", "hello?? answer me", "just talking to Bob", "reply now please"):
        assert text in texts, f"{text!r} must be stored"
    assert not any(t in ("help", "stats") or t.startswith("persona") for t in texts), "commands are not chat"


async def test_the_room_reply_cap_stores_without_replying(room_limited):
    app, _clock = room_limited
    conv = app.conversation
    async with conv.scheduler.paused_turns():  # so the second message finds the first turn still waiting
        first = await conv.handle(message("Hi! Say hello.", author=ALICE, mid="r1"))
        joined = await conv.handle(message("and hello from me", author=BOB, mid="r2"))
    assert first.kind == "reply"
    assert joined.kind == "joined", "a message joining the waiting turn adds no reply"
    await (await first.admission.ticket.reply).text()
    await conv.scheduler.wait_idle()
    busy = await conv.handle(message("my turn now", author=CAROL, mid="r3"))
    assert busy.kind == "limited" and busy.notice is not None
    assert busy.notice.startswith("this room is busy: replies resume in ")
    quiet = await conv.handle(message("hello?", author=ALICE, mid="r4"))
    assert quiet.kind == "limited" and quiet.notice is None, "one notice per room per period"
    texts = await stored_texts(app)
    assert texts == ["Hi! Say hello.", "and hello from me", "my turn now", "hello?"]
