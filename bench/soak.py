"""A soak: 2,000 messages over 50 rooms through the whole engine; does memory stay flat?

Every room is visited once first (an addressed message, so the model's buffers and the room's
bookkeeping exist), then ``rss_start_mb`` is read. The rest of the messages follow round-robin
over the rooms: most only stored, one in ``--addressed-every`` per room addressed and answered
with a few tokens. ``rss_growth`` = rss_end / rss_start (target <= 1.1); ``stored`` counts the
user messages in the database at the end (target: every one sent).

Each user sends at most ``messages / (rooms * users_per_room)`` messages (5 by default), below
the per-user burst, so rate limits (kept at their defaults, named in the config) drop no reply.
The RAM state cache is bounded (``--state-cache-mb``) below what the warm-up already fills, so
it cannot grow by design during the measured part.
Usage: python -m bench.soak [--messages 2000] [--rooms 50] [--addressed-every 10] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from bench.common import ROOT, SMOL, emit, require_model
from bot import App
from config import HearthConfig
from engine.types import Author, IncomingMessage, RoomRef

LIMITS = {"user_messages_per_minute": 20, "user_burst": 8, "room_replies_per_minute": 30}  # the defaults
USERS_PER_ROOM = 8
MAX_TOKENS = 8
MAX_PENDING = 4  # replies in flight before the sender waits: the queue (32) never overflows


def rss_mb() -> float:
    """Resident set size now (Linux /proc); elsewhere the peak, which is all there is."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 1024)


def settled_rss() -> float:
    gc.collect()
    return round(rss_mb(), 1)


def message(i: int, rooms: int, addressed: bool) -> IncomingMessage:
    """Message ``i``: room ``i % rooms``, from one of the room's users, in turn."""
    room = i % rooms
    user = (i // rooms) % USERS_PER_ROOM
    author = Author(f"r{room}-u{user}", f"Guest{room}x{user}")
    text = f"Note {i}: the ferry to Dunhollow leaves at {i % 12 + 1} o'clock, says guest {user}."
    return IncomingMessage(RoomRef("bench", f"room-{room}"), author, text, message_id=str(i), addressed=addressed)


async def finish(ticket) -> None:
    reply = await ticket.reply
    await reply.text()


PERSONA = f"""\
name: Keeper
description: The keeper of a ferry timetable.
system_prompt: You are {{{{char}}}}. Answer {{{{user}}}} in one short sentence.
sampling:
  temperature: 0.7
  max_tokens: {MAX_TOKENS}
"""


async def run(args: argparse.Namespace, data_dir: Path) -> dict:
    # Built-in personas ask for up to 256 tokens a reply; this one keeps every reply short.
    (data_dir / "personas").mkdir()
    (data_dir / "personas" / "soak.yaml").write_text(PERSONA)
    config = HearthConfig.model_validate(
        {
            "model": {
                "models_dir": str(ROOT / "models"),
                "n_ctx": args.n_ctx,
                "n_threads": args.threads,
                "state_cache_mb": args.state_cache_mb,
                "sampling": {"max_tokens": MAX_TOKENS},
            },
            "memory": {"summary_max_tokens": 32},
            "limits": LIMITS,
            "database": {"url": f"sqlite+aiosqlite:///{data_dir}/soak.db"},
            "personas": {"dir": str(data_dir / "personas"), "default": "soak"},
        }
    )
    app = App.build(config)
    await app.start()
    conversation = app.conversation
    outcomes: Counter[str] = Counter()
    pending: dict[int, asyncio.Task] = {}
    replies = 0

    async def send(i: int, addressed: bool) -> None:
        nonlocal replies
        outcome = await conversation.handle(message(i, args.rooms, addressed))
        outcomes[outcome.kind] += 1
        if outcome.admission is None:
            return
        ticket = outcome.admission.ticket
        if id(ticket) not in pending:
            pending[id(ticket)] = asyncio.create_task(finish(ticket))
            replies += 1
        while len(pending) >= MAX_PENDING:
            done, _ = await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
            for key in [k for k, task in pending.items() if task in done]:
                pending.pop(key).result()

    async def drain() -> None:
        for task in list(pending.values()):
            await task
        pending.clear()
        await conversation.scheduler.wait_idle()

    started = time.perf_counter()
    try:
        warmup = min(args.rooms, args.messages)
        for i in range(warmup):  # every room once, answered: buffers, states and bookkeeping exist
            await send(i, addressed=True)
        await drain()
        rss_start = settled_rss()
        if args.trace:
            tracemalloc.start(25)
            before = tracemalloc.take_snapshot()
        for i in range(warmup, args.messages):
            turn = i // args.rooms
            await send(i, addressed=turn % args.addressed_every == (i % args.rooms) % args.addressed_every)
        await drain()
        seconds = time.perf_counter() - started
        rss_end = settled_rss()
        if args.trace:
            top = tracemalloc.take_snapshot().compare_to(before, "traceback")[:15]
            for stat in top:
                print(stat, *stat.traceback.format()[-6:], sep="\n  ", file=sys.stderr)
        stored = replies_stored = 0
        for conversation_id, _ in await app.store.conversations():
            for stored_message in await app.store.messages(conversation_id):
                stored += stored_message.role == "user"
                replies_stored += stored_message.role == "assistant"
        cache = app.host.require().states
        cache_mb = round(cache.ram_bytes / 2**20, 1) if cache else 0.0
    finally:
        await app.close()
    return {
        "messages": args.messages,
        "rooms": args.rooms,
        "users": min(args.messages, args.rooms * USERS_PER_ROOM),
        "addressed": f"1 in {args.addressed_every} per room after a warm-up reply in each; limits {LIMITS}",
        "outcomes": dict(outcomes),
        "replies": replies,
        "replies_stored": replies_stored,
        "compactions": conversation.summarizer.compactions,
        "stored": stored,
        "max_tokens": MAX_TOKENS,
        "n_ctx": args.n_ctx,
        "n_threads": args.threads,
        "state_cache_mb": args.state_cache_mb,
        "state_cache_ram_mb": cache_mb,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_growth": round(rss_end / rss_start, 3),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--addressed-every", type=int, default=10, help="per room, one turn in N is addressed")
    parser.add_argument("--n-ctx", type=int, default=2048, help="1024 adds summary compactions (slow)")
    parser.add_argument(
        "--threads", type=int, default=1, help="1: memory, not speed, is measured; immune to a busy machine"
    )
    parser.add_argument("--state-cache-mb", type=int, default=64)
    parser.add_argument("--trace", action="store_true", help="tracemalloc: print the top growth to stderr")
    args = parser.parse_args()
    require_model(SMOL)
    with tempfile.TemporaryDirectory(prefix="hearth-soak-") as tmp:
        emit("soak", asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
