"""Rate limits through a real Conversation: notice once, silence, all stored.

Pure policy, so the model is a FakeBackend (tests/engine/conftest.py): each reply the policy
allows is queued by hand, and ``backend.history`` shows which turns reached the model.
"""

from __future__ import annotations

import pytest_asyncio

from engine.commands.core import CommandContext
from engine.types import Author, IncomingMessage, RoomRef
from errors import CooldownError

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


@pytest_asyncio.fixture
async def user_limited(fake_apps):
    clock = Clock()
    application, backend = await fake_apps(
        limits={"user_messages_per_minute": 6, "user_burst": 2, "room_replies_per_minute": 0}, clock=clock
    )
    return application, clock, backend


@pytest_asyncio.fixture
async def room_limited(fake_apps):
    clock = Clock()
    application, backend = await fake_apps(
        limits={"user_messages_per_minute": 0, "user_burst": 1, "room_replies_per_minute": 1}, clock=clock
    )
    return application, clock, backend


def message(text: str, author: Author = ALICE, addressed: bool = True, mid: str | None = None):
    return IncomingMessage(room=ROOM, author=author, text=text, message_id=mid, addressed=addressed)


async def stored_texts(app) -> list[str]:
    conversation_id = (await app.conversation.room(ROOM)).conversation_id
    return [m.text for m in await app.store.messages(conversation_id) if m.role == "user"]


async def test_a_user_over_the_limit_is_told_once_then_silent_and_still_stored(user_limited):
    app, clock, backend = user_limited
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
    backend.enqueue(["Hello, Root."])
    root = await conv.handle(message("hi, I am root", author=ROOT, mid="m5"))
    assert root.kind == "reply"
    assert await (await root.admission.ticket.reply).text() == "Hello, Root."
    assert len(backend.history) == 1, "only the operator's message reached the model"

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
    app, _clock, backend = room_limited
    conv = app.conversation
    backend.enqueue(["Hello!"])
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
    assert len(backend.history) == 1, "one reply for the joined turn, none past the cap"
