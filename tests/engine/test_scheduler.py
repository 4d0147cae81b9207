"""Scheduler policy: fairness, coalescing, the bounded queue and cancel (fake jobs, no model)."""

from __future__ import annotations

import asyncio

import pytest

from engine.reply import Done, ReplyStream, TextChunk
from engine.scheduler import Scheduler
from errors import BusyError, UserError


class ManualJobs:
    """Reply jobs that finish only when the test says so; records the order rooms ran in."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.streams: dict[str, ReplyStream] = {}

    async def __call__(self, room_key: str) -> ReplyStream:
        self.order.append(room_key)
        stream = ReplyStream()
        self.streams[room_key] = stream
        return stream

    def finish(self, room_key: str) -> None:
        stream = self.streams[room_key]
        stream.push(TextChunk(f"reply to {room_key}"))
        stream.push(Done())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def scheduler():
    jobs = ManualJobs()
    sched = Scheduler(jobs, max_queue=3)
    sched.jobs = jobs
    await sched.start()
    yield sched
    await sched.close()


async def test_rooms_are_served_round_robin_and_messages_coalesce(scheduler):
    jobs = scheduler.jobs
    scheduler.request("a")
    await settle()  # a is running now
    b = scheduler.request("b")
    scheduler.request("c")
    again = scheduler.request("b")  # b is still waiting: joins its turn
    a2 = scheduler.request("a")  # a is running: queues a new turn behind c
    assert again.joined_existing and again.ticket is b.ticket
    assert b.ticket.coalesced == 1
    assert [scheduler.position(k) for k in ("b", "c", "a")] == [1, 2, 3]
    assert not a2.joined_existing
    for room in ("a", "b", "c", "a"):
        await settle()
        jobs.finish(room)
    await scheduler.wait_idle()
    assert jobs.order == ["a", "b", "c", "a"]


async def test_full_queue_is_busy_at_once(scheduler):
    scheduler.request("running")
    await settle()
    for room in ("x", "y", "z"):
        scheduler.request(room)
    with pytest.raises(BusyError, match="busy, try again in a moment"):
        scheduler.request("w")
    assert scheduler.request("x").joined_existing  # joining a waiting turn is never refused


async def test_cancel_running_and_waiting(scheduler):
    jobs = scheduler.jobs
    first = scheduler.request("a")
    scheduler.request("b")
    await settle()
    stream = await first.ticket.reply
    assert scheduler.cancel("a") and stream.cancelled
    assert scheduler.cancel("b")
    assert scheduler.depth == 0
    jobs.finish("a")
    await scheduler.wait_idle()
    assert jobs.order == ["a"]


async def test_background_work_yields_to_replies(scheduler):
    started = asyncio.Event()
    runs: list[str] = []

    async def summarize():
        runs.append("start")
        started.set()
        await asyncio.sleep(3600)

    scheduler.background("summary:a", summarize)
    await started.wait()
    scheduler.request("a")  # a reply arrives: the background job is pre-empted
    await settle()
    assert scheduler.jobs.order == ["a"]
    scheduler.jobs.finish("a")
    await settle()
    assert runs == ["start", "start"], "the pre-empted job runs again once replies are done"


async def test_prepare_runs_with_nothing_generating_and_may_pause_the_scheduler():
    """A model swap in the prepare step pauses the scheduler and waits for the running turn:
    that must not be the turn being prepared, or it would wait for itself forever."""
    jobs = ManualJobs()
    seen: list[tuple[str, str | None]] = []

    async def prepare(room_key: str) -> None:
        async with sched.paused_turns():  # what ModelHost.load does for a persona's model
            seen.append((room_key, sched.running_room))

    sched = Scheduler(jobs, prepare=prepare)
    await sched.start()
    try:
        sched.request("a")
        b = sched.request("b")
        await settle()
        assert jobs.order == ["a"], "b is prepared only once a's turn has drained"
        jobs.finish("a")
        stream = await asyncio.wait_for(b.ticket.reply, 2)
        assert seen == [("a", None), ("b", None)]
        assert jobs.order == ["a", "b"] and stream is jobs.streams["b"]
        jobs.finish("b")
        await asyncio.wait_for(sched.wait_idle(), 2)
    finally:
        await sched.close()


async def test_messages_join_a_turn_being_prepared_and_stop_drops_it():
    jobs = ManualJobs()
    release = asyncio.Event()

    async def prepare(room_key: str) -> None:
        if room_key == "a":
            await release.wait()

    sched = Scheduler(jobs, prepare=prepare)
    await sched.start()
    try:
        first = sched.request("a")
        await settle()
        joined = sched.request("a")
        assert joined.joined_existing and joined.ticket is first.ticket
        assert sched.cancel("a")
        release.set()
        with pytest.raises(UserError, match="stopped before the reply began"):
            await first.ticket.reply
        sched.request("b")
        await settle()
        assert jobs.order == ["b"], "the stopped turn never started generating"
        jobs.finish("b")
        await asyncio.wait_for(sched.wait_idle(), 2)
    finally:
        await sched.close()


async def test_a_pause_waits_for_the_running_turn_and_holds_new_ones(scheduler):
    """What a model swap needs: the running reply ends first, and no turn starts until it is done."""
    jobs = scheduler.jobs
    scheduler.request("a")
    await settle()
    entered, leave = asyncio.Event(), asyncio.Event()

    async def swap() -> None:
        async with scheduler.paused_turns():
            entered.set()
            await leave.wait()

    task = asyncio.create_task(swap())
    b = scheduler.request("b")
    await settle()
    assert not entered.is_set(), "a is still generating"
    jobs.finish("a")
    await settle()
    assert entered.is_set(), "woken when the turn ends, not by a later poll"
    await settle()
    assert jobs.order == ["a"], "b is held while the pause is open"
    leave.set()
    await task
    await asyncio.wait_for(b.ticket.reply, 2)
    assert jobs.order == ["a", "b"]
    jobs.finish("b")
    await asyncio.wait_for(scheduler.wait_idle(), 2)


async def test_a_turn_prepared_during_a_pause_starts_only_when_it_ends():
    """An operator's swap may begin while another room's turn is being prepared: that turn waits."""
    jobs = ManualJobs()
    release = asyncio.Event()

    async def prepare(room_key: str) -> None:
        await release.wait()

    sched = Scheduler(jobs, prepare=prepare)
    await sched.start()
    try:
        async with asyncio.timeout(2):
            first = sched.request("a")
            await settle()
            async with sched.paused_turns():  # nothing is generating: entered at once
                release.set()
                await settle()
                assert jobs.order == []
                assert sched.request("a").joined_existing, "the held turn still takes new messages"
            await first.ticket.reply
            assert jobs.order == ["a"]
            jobs.finish("a")
            await sched.wait_idle()
    finally:
        await sched.close()
