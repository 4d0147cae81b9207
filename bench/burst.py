"""A burst: 200 messages over 20 rooms in 10 s, through the whole engine and a real database.

Reports messages stored (must be all), replies sent, busy notices, the p95 wait from a
message to the first token of the reply that answers it, and the worst event-loop lag.
Usage: python -m bench.burst [--messages 200] [--rooms 20] [--seconds 10] [--parallel 1]
(``--parallel N``: rooms generating at once in the one loaded model, ``model.parallel``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, SMOL, emit, require_model
from bot import App
from config import HearthConfig
from engine.reply import GenerationStats
from engine.types import Author, IncomingMessage, RoomRef


async def loop_lag(stop: asyncio.Event, worst: list[float]) -> None:
    """How late a 10 ms sleep wakes up: the loop's responsiveness."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], time.perf_counter() - started - 0.01)


async def first_token_at(ticket) -> tuple[float, GenerationStats | None]:
    """When the reply's first token arrived, and its stats once it ended."""
    reply = await ticket.reply
    first = 0.0
    async for _ in reply:
        first = first or time.perf_counter()
    await reply.text()
    return first or time.perf_counter(), reply.stats


async def run(messages: int, rooms: int, seconds: float, data_dir: Path, parallel: int = 1) -> dict:
    config = HearthConfig.model_validate(
        {
            "model": {"models_dir": str(ROOT / "models"), "sampling": {"max_tokens": 16}, "parallel": parallel},
            "database": {"url": f"sqlite+aiosqlite:///{data_dir}/burst.db"},
            "personas": {"dir": str(data_dir / "personas")},
            # The scheduler is measured here, not the rate limiter (7 users send ~28 messages each).
            "limits": {"user_messages_per_minute": 0, "room_replies_per_minute": 0},
        }
    )
    app = App.build(config)
    await app.start()
    stop, worst = asyncio.Event(), [0.0]
    lag_task = asyncio.create_task(loop_lag(stop, worst))
    busy = 0
    waits: list[tuple[float, asyncio.Task]] = []
    tickets = {}
    try:
        interval = seconds / messages
        began = time.perf_counter()
        for i in range(messages):
            room = RoomRef("bench", f"room-{i % rooms}")
            sent = time.perf_counter()
            outcome = await app.conversation.handle(
                IncomingMessage(room, Author(f"u{i % 7}", f"User{i % 7}"), f"Message {i}: hello there!",
                                message_id=str(i), addressed=True)
            )
            if outcome.kind == "busy":
                busy += 1
            elif outcome.admission is not None:
                ticket = outcome.admission.ticket
                if id(ticket) not in tickets:
                    tickets[id(ticket)] = asyncio.create_task(first_token_at(ticket))
                waits.append((sent, tickets[id(ticket)]))
            await asyncio.sleep(max(0.0, sent + interval - time.perf_counter()))
        await app.conversation.scheduler.wait_idle()
        drained = time.perf_counter() - began
        delays = sorted([(await task)[0] - sent for sent, task in waits])
        stats = [stat for _, stat in [await task for task in tickets.values()] if stat is not None]
        stored = 0
        for conversation_id, _ in await app.store.conversations():
            stored += sum(1 for m in await app.store.messages(conversation_id) if m.role == "user")
    finally:
        stop.set()
        await lag_task
        await app.close()
    p95 = delays[int(0.95 * (len(delays) - 1))] if delays else 0.0
    return {
        "messages": messages,
        "rooms": rooms,
        "parallel": parallel,
        "stored": stored,
        "replied": len(tickets),
        "busy": busy,
        "p95_wait_s": round(p95, 2),
        # Where the time went: prompt tokens evaluated and tokens generated over all replies,
        # rooms whose saved state was loaded, and the time until every reply had ended.
        "prompt_tokens": sum(stat.prompt_tokens for stat in stats),
        "evaluated_prompt_tokens": sum(stat.evaluated_prompt_tokens for stat in stats),
        "generated_tokens": sum(stat.completion_tokens for stat in stats),
        "flash_prefilled_tokens": sum(stat.prefilled_tokens for stat in stats),
        "restored": sum(1 for stat in stats if stat.restored_state),
        "drain_s": round(drained, 2),
        "max_loop_lag_ms": round(worst[0] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    require_model(SMOL)
    with tempfile.TemporaryDirectory(prefix="hearth-burst-") as tmp:
        emit("burst", asyncio.run(run(args.messages, args.rooms, args.seconds, Path(tmp), args.parallel)))


if __name__ == "__main__":
    main()
