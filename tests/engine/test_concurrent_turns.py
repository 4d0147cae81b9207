"""Engine policy over a FakeBackend: turns at once follow the backend's ``max_concurrent``.

No model is loaded: the backend seam (``ModelHost.factory``) builds a FakeBackend, so these
tests check scheduling and wiring only. Generation itself is tested on the real model.
"""

from __future__ import annotations

import asyncio

import pytest_asyncio

from engine.commands.core import CommandContext
from engine.fake_backend import FakeBackend
from engine.types import Author, IncomingMessage, RoomRef
from errors import ModelError

ALICE = Author("u1", "Alice")


def message(room: str, text: str) -> IncomingMessage:
    return IncomingMessage(room=RoomRef("test", room), author=ALICE, text=text, message_id=None, addressed=True)


@pytest_asyncio.fixture
async def apps(fake_apps):
    """``await apps(n)``: a started App whose FakeBackend runs ``n`` replies at once."""

    async def make(max_concurrent: int):
        return await fake_apps(max_concurrent=max_concurrent)

    return make


async def hold_two_rooms(conv, backend: FakeBackend) -> tuple[asyncio.Event, list]:
    """Rooms a and b ask for replies ("one", "two") that stream only once the returned gate is set."""
    gate = asyncio.Event()
    backend.enqueue(["one"], gate=gate)
    backend.enqueue(["two"], gate=gate)
    return gate, [await conv.handle(message(room, f"hello from {room}")) for room in ("a", "b")]


async def _two_rooms_at_once(app, backend: FakeBackend) -> int:
    """Hold two rooms' replies open; return how many streamed at the same time."""
    gate, (first, second) = await hold_two_rooms(app.conversation, backend)
    for _ in range(20):
        await asyncio.sleep(0.01)
    gate.set()
    texts = [await (await o.admission.ticket.reply).text() for o in (first, second)]
    await app.conversation.scheduler.wait_idle()
    assert sorted(texts) == ["one", "two"]
    return backend.peak_active


async def test_a_backend_that_batches_gets_rooms_at_once(apps):
    app, backend = await apps(2)
    backend.peak_active = 0
    assert await _two_rooms_at_once(app, backend) == 2
    assert len(backend.history) == 2, "each room's turn reached the backend once"
    assert {r.room_key for r in backend.history} == {"test:a", "test:b"}


async def test_one_at_a_time_when_the_backend_says_so(apps):
    app, backend = await apps(1)
    backend.peak_active = 0
    assert await _two_rooms_at_once(app, backend) == 1


async def test_one_room_never_runs_two_turns_at_once(apps):
    app, backend = await apps(2)
    conv = app.conversation
    gate = asyncio.Event()
    backend.enqueue(["first"], gate=gate)
    backend.enqueue(["second"])
    backend.peak_active = 0
    first = await conv.handle(message("a", "one"))
    await asyncio.sleep(0.05)
    again = await conv.handle(message("a", "two"))  # the running turn does not take it: a new turn waits
    assert again.kind == "reply" and again.admission.ticket is not first.admission.ticket
    await asyncio.sleep(0.05)
    assert backend.peak_active == 1 and conv.scheduler.position(RoomRef("test", "a").label) == 1
    gate.set()
    assert await (await again.admission.ticket.reply).text() == "second"


async def test_a_swap_waits_for_every_running_turn(apps):
    app, backend = await apps(2)
    conv = app.conversation
    gate, outcomes = await hold_two_rooms(conv, backend)
    await asyncio.sleep(0.05)
    assert conv.scheduler.running_rooms == {"test:a", "test:b"}
    backend.enqueue(["Hi"])  # the new model's health check
    swap = asyncio.create_task(app.host.load("smollm2-135m-instruct"))
    await asyncio.sleep(0.05)
    assert not swap.done(), "two replies are still streaming"
    gate.set()
    assert "done in" in await asyncio.wait_for(swap, 5)
    assert [await (await o.admission.ticket.reply).text() for o in outcomes] == ["one", "two"]


async def test_a_failing_backend_keeps_the_message(apps):
    app, backend = await apps(1)
    conv = app.conversation
    backend.enqueue([], error=ModelError("the server is unreachable"))
    outcome = await conv.handle(message("a", "please keep me"))
    reply = await outcome.admission.ticket.reply
    try:
        await reply.text()
    except ModelError as exc:
        assert "unreachable" in str(exc)
    else:
        raise AssertionError("the failure must reach the adapter")
    room = await conv.room(RoomRef("test", "a"))
    assert [m.text for m in await app.store.messages(room.conversation_id)] == ["please keep me"]


async def test_stats_counts_the_rooms_generating_now(apps):
    app, backend = await apps(2)
    conv = app.conversation
    gate, held = await hold_two_rooms(conv, backend)
    for _ in range(20):
        await asyncio.sleep(0.01)
    stats = await conv.run_command("stats", CommandContext(RoomRef("test", "c"), ALICE))
    assert "0 waiting, 2 of 2 rooms generating now" in stats.text, stats.text
    gate.set()
    for outcome in held:
        await (await outcome.admission.ticket.reply).text()
    await conv.scheduler.wait_idle()
    idle = await conv.run_command("stats", CommandContext(RoomRef("test", "c"), ALICE))
    assert "0 of 2 rooms generating now" in idle.text, idle.text
