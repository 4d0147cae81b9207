"""Fair, bounded generation for a model shared by many rooms, up to N turns at once.

Each room has at most one waiting turn and at most one running turn: messages that
arrive while it waits are coalesced into it (they are all stored; one reply covers
them). Rooms are served round-robin in arrival order, so a chatty room cannot starve a
quiet one. N comes from ``capacity()`` before each admission: the loaded backend's
``max_concurrent`` (1 for in-process llama.cpp, a server's configured batch width), so a
model swap changes it between turns. Background work (summaries) runs only when no
reply is waiting or running, and yields to a reply that arrives. An optional prepare
step runs before each turn is admitted (one at a time), so it may pause the scheduler
itself (a model swap does) without waiting on its own turn. ``paused_turns`` holds new
turns and waits, without polling, for every running one to end. Time never appears
here: a turn's timeout is handed to ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from engine.reply import ReplyStream
from errors import BusyError, HearthError, ModelError, UserError

log = logging.getLogger(__name__)

ReplyJob = Callable[[str], Awaitable[ReplyStream]]
BackgroundJob = Callable[[], Coroutine[Any, Any, None]]
PrepareJob = Callable[[str], Awaitable[None]]
Capacity = Callable[[], int]


@dataclass
class Ticket:
    """A room's place in line. ``reply`` resolves to the stream once its turn starts."""

    room_key: str
    reply: asyncio.Future[ReplyStream] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    coalesced: int = 0  # how many later messages joined this turn
    requested_by: set[str] = field(default_factory=set)  # author ids whose messages this turn answers
    # The turn after this one that the same delivery shows (another character of the cast
    # answering the same message), or None. Always resolved once this turn is over.
    follow_up: asyncio.Future[Admission | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def end_follow_ups(self) -> None:
        """No turn follows this one (it failed, was stopped, or the cast is done)."""
        if not self.follow_up.done():
            self.follow_up.set_result(None)


@dataclass(frozen=True)
class Admission:
    """What ``request`` tells the adapter: the ticket, and whether this message only joined it."""

    ticket: Ticket
    joined_existing: bool
    position: int


def ready_admission(room_key: str, reply: ReplyStream) -> Admission:
    """An admission for a reply that needs no turn (a character's fixed greeting): adapters show it
    through the same path as a generated one, with its speaker."""
    ticket = Ticket(room_key)
    ticket.reply.set_result(reply)
    ticket.end_follow_ups()
    return Admission(ticket, False, 0)


@dataclass
class _Running:
    """A turn that has started: its ticket, its reply once the job returns it, and its task."""

    ticket: Ticket
    task: asyncio.Task[None] | None = None
    reply: ReplyStream | None = None


class Scheduler:
    """Runs reply jobs fairly, up to ``capacity()`` at once; see the module docstring for the rules."""

    def __init__(
        self,
        run_reply: ReplyJob,
        max_queue: int = 32,
        timeout_s: float | None = None,
        prepare: PrepareJob | None = None,
        capacity: Capacity = lambda: 1,
    ) -> None:
        self._run_reply = run_reply
        self._prepare = prepare
        self._capacity = capacity
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._waiting: OrderedDict[str, Ticket] = OrderedDict()
        self._background: OrderedDict[str, BackgroundJob] = OrderedDict()
        self._wake = asyncio.Event()
        self._running: dict[str, _Running] = {}
        self._preparing: Ticket | None = None  # popped from the line, its prepare step running
        self._running_background: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._resumed = asyncio.Event()  # cleared while any ``paused_turns`` block is open
        self._resumed.set()
        self._pauses = 0
        self._turn_over = asyncio.Event()  # cleared while any reply turn runs (prepare excluded)
        self._turn_over.set()
        self.completed = 0

    def use_capacity(self, capacity: Capacity) -> None:
        """Wire where N comes from (``Conversation`` passes its model host's ``max_concurrent``)."""
        self._capacity = capacity

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="hearth-scheduler")

    async def close(self) -> None:
        preparing = self._preparing
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        turns = [turn.task for turn in self._running.values() if turn.task is not None]
        for task in turns:
            task.cancel()
        await asyncio.gather(*turns, return_exceptions=True)
        for ticket in [*self._waiting.values(), *([preparing] if preparing else [])]:
            if not ticket.reply.done():
                ticket.reply.set_exception(ModelError("the bot is shutting down"))
            ticket.end_follow_ups()
        self._waiting.clear()

    # -- requests ------------------------------------------------------------------------

    def request(self, room_key: str) -> Admission:
        """Queue a turn for ``room_key`` (or join its waiting or preparing turn). BusyError when full."""
        ticket = self._pending_ticket(room_key)
        if ticket is not None:
            ticket.coalesced += 1
            return Admission(ticket, True, self.position(room_key))
        if len(self._waiting) >= self.max_queue:
            raise BusyError()
        ticket = Ticket(room_key)
        self._waiting[room_key] = ticket
        if self._running_background is not None:
            self._running_background.cancel()  # a waiting reply always goes first
        self._wake.set()
        return Admission(ticket, False, self.position(room_key))

    def background(self, key: str, job: BackgroundJob) -> None:
        """Queue low-priority work; one pending job per key."""
        self._background.setdefault(key, job)
        self._wake.set()

    def would_join(self, room_key: str) -> bool:
        """True when a request for ``room_key`` now would join its pending turn, adding no reply."""
        return self._pending_ticket(room_key) is not None

    def _pending_ticket(self, room_key: str) -> Ticket | None:
        """The room's turn that has not started: waiting in line, or being prepared."""
        return self._waiting.get(room_key) or self._prepared_ticket(room_key)

    def _prepared_ticket(self, room_key: str) -> Ticket | None:
        """The room's turn if it is being prepared: a message arriving now is covered by it."""
        ticket = self._preparing
        if ticket is not None and ticket.room_key == room_key and not ticket.reply.done():
            return ticket
        return None

    def position(self, room_key: str) -> int:
        """1-based place in line; 0 when the room's turn is running or it is not queued."""
        for index, key in enumerate(self._waiting, start=1):
            if key == room_key:
                return index
        return 0

    @property
    def depth(self) -> int:
        return len(self._waiting)

    @property
    def running_rooms(self) -> frozenset[str]:
        return frozenset(self._running)

    @property
    def running_room(self) -> str | None:
        """One room whose turn runs (the oldest), or None."""
        return next(iter(self._running), None)

    def running_ticket(self, room_key: str) -> Ticket | None:
        """The ticket of the room's running turn (a reply job chains its follow-up on it)."""
        running = self._running.get(room_key)
        return running.ticket if running is not None else None

    def requesters(self, room_key: str) -> frozenset[str]:
        """Who asked for the room's running (else waiting) turn: they may stop their own reply."""
        running = self._running.get(room_key)
        if running is not None:
            return frozenset(running.ticket.requested_by)
        ticket = self._pending_ticket(room_key)
        return frozenset(ticket.requested_by) if ticket is not None else frozenset()

    def cancel(self, room_key: str) -> bool:
        """Stop a room's running reply, or drop its waiting turn. True if anything stopped."""
        running = self._running.get(room_key)
        if running is not None and running.reply is not None:
            running.reply.cancel()
            return True
        ticket = self._waiting.pop(room_key, None) or self._prepared_ticket(room_key)
        if ticket is not None and not ticket.reply.done():
            ticket.reply.set_exception(UserError("stopped before the reply began"))
            ticket.end_follow_ups()
            return True
        return False

    def cancel_running(self) -> None:
        """Stop every running reply and background job (a swap with ``now``, or shutdown)."""
        for running in self._running.values():
            if running.reply is not None:
                running.reply.cancel()
        if self._running_background is not None:
            self._running_background.cancel()

    # -- pausing -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def paused_turns(self) -> AsyncIterator[None]:
        """Hold new turns and wait for every running one to end; turns resume when the block exits.

        From the prepare step it returns once the other rooms' turns end: the turn being
        prepared has not started, so a persona's model swap never waits on the turn that
        asked for it. Pauses nest.
        """
        self._pauses += 1
        self._resumed.clear()
        try:
            await self._turn_over.wait()
            yield
        finally:
            self._pauses -= 1
            if self._pauses == 0:
                self._resumed.set()
                self._wake.set()

    async def wait_running_turn(self) -> None:
        """Until no reply turn runs (every reply drained and stored); for shutdown."""
        await self._turn_over.wait()

    # -- the loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._resumed.wait()
            self._wake.clear()  # anything that changes the picture below sets it again
            ticket = self._next_ticket() if len(self._running) < max(self._capacity(), 1) else None
            if ticket is not None:
                await self._admit(ticket.room_key, ticket)
                if not ticket.reply.done():  # else stopped while prepared or held by a pause
                    self._start_turn(ticket)
                continue
            if not self._waiting and not self._running and self._background:
                key, job = self._background.popitem(last=False)
                await self._serve_background(key, job)
                continue
            await self._wake.wait()

    def _next_ticket(self) -> Ticket | None:
        """The longest-waiting turn of a room that is not generating now (one turn per room)."""
        for room_key in self._waiting:
            if room_key not in self._running:
                return self._waiting.pop(room_key)
        return None

    def _start_turn(self, ticket: Ticket) -> None:
        running = _Running(ticket)
        self._running[ticket.room_key] = running
        self._turn_over.clear()
        running.task = asyncio.create_task(self._run_turn(running), name=f"turn-{ticket.room_key}")

    async def _admit(self, room_key: str, ticket: Ticket) -> None:
        """Prepare the turn, then wait out a pause that began meanwhile (a swap finishes first).

        The ticket counts as being prepared all along, so messages join it and stop drops it.
        """
        self._preparing = ticket
        try:
            if self._prepare is not None:
                await self._run_prepare(self._prepare, room_key)
            await self._resumed.wait()
        finally:
            self._preparing = None

    async def _run_turn(self, running: _Running) -> None:
        room_key = running.ticket.room_key
        try:
            await self._generate(running)
        finally:
            running.ticket.end_follow_ups()  # the reply's on_done hooks had their chance to chain one
            del self._running[room_key]
            if not self._running:
                self._turn_over.set()
            self._wake.set()

    async def _generate(self, running: _Running) -> None:
        ticket, room_key = running.ticket, running.ticket.room_key
        try:
            reply = await self._run_reply(room_key)
        except HearthError as exc:
            ticket.reply.set_exception(exc)
            return
        except Exception as exc:
            log.exception("preparing a reply for %s failed", room_key)
            ticket.reply.set_exception(ModelError(f"could not start the reply: {exc}", original=exc))
            return
        running.reply = reply
        if not ticket.reply.done():
            ticket.reply.set_result(reply)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as the reply finishes, and then close() would wait forever.
            async with asyncio.timeout(self.timeout_s):
                await self._drain(reply)
        except TimeoutError:
            log.warning("reply for %s hit the %.0fs timeout; cancelling", room_key, self.timeout_s)
            reply.cancel()
            await self._drain(reply)
        finally:
            self.completed += 1

    @staticmethod
    async def _run_prepare(prepare: PrepareJob, room_key: str) -> None:
        """Run the prepare step; its failure is logged and never blocks the turn."""
        try:
            await prepare(room_key)
        except HearthError as exc:
            log.warning("preparing the turn of %s failed: %s", room_key, exc)
        except Exception:
            log.exception("preparing the turn of %s failed", room_key)

    @staticmethod
    async def _drain(reply: ReplyStream) -> None:
        """Wait for the reply and its on_done hooks (the stored reply): a room's turns never overlap."""
        with contextlib.suppress(HearthError):  # the adapter shows the error; the scheduler moves on
            await reply.text()
        await reply.settled()

    async def _serve_background(self, key: str, job: BackgroundJob) -> None:
        self._running_background = asyncio.create_task(job(), name=f"background-{key}")
        try:
            await self._running_background
        except asyncio.CancelledError:
            if self._task is not None and self._task.cancelling():
                raise
            self._background.setdefault(key, job)  # pre-empted by a reply: try again later
        except Exception:
            log.exception("background job %s failed", key)
        finally:
            self._running_background = None

    async def wait_idle(self) -> None:
        """For tests and shutdown: wait until nothing is queued or running."""
        while self._waiting or self._background or self._running or self._running_background or self._preparing:
            await asyncio.sleep(0.01)
