"""Rendering a reply on Discord: splitting, throttled edits (fake clock), pings, queue notice, errors.

These drive ``DiscordAdapter.deliver`` with scripted ReplyStreams, so every chunk and every
clock tick is under the test's control; the messages still go through discord.py and dpytest.
"""

from __future__ import annotations

import asyncio
import logging
from itertools import pairwise

import pytest

from adapters.discord_mapping import room_for
from adapters.discord_reply import SAFE_MENTIONS
from adapters.rendering import UNFINISHED_MARKER, EditThrottle, error_line, stream_edits
from engine.reply import ReplyStream
from errors import ModelError, UserError
from tests.discord.conftest import FakeClock, Harness, PacedStream, admission_for

MARKER = UNFINISHED_MARKER.strip()


def long_reply_with_code() -> str:
    """About 5,000 characters: prose, a 45-line Python block, more prose."""
    prose = " ".join(f"Sentence number {i} explains one more detail of the plan." for i in range(25))
    code = "\n".join(f"    total += compute_value({i}, factor={i * 3})  # step {i}" for i in range(45))
    text = f"{prose}\n\n```python\ndef run():\n    total = 0\n{code}\n    return total\n```\n\n{prose}"
    assert 4800 <= len(text) <= 5500, len(text)
    return text


def in_chunks(text: str, size: int, every: float) -> list[tuple[float, str]]:
    return [(i / size * every, text[i : i + size]) for i in range(0, len(text), size)]


async def deliver(harness: Harness, stream, *, position: int = 0, reference=None) -> None:
    channel = harness.channel()
    await harness.adapter.deliver(channel, admission_for(stream, position), room_for(channel), reference=reference)


async def test_a_5000_character_reply_with_code_continues_in_new_messages(bare_harness: Harness):
    text = long_reply_with_code()
    stream = PacedStream(bare_harness.clock, in_chunks(text, 150, 0.3))
    await deliver(bare_harness, stream)
    pieces = bare_harness.bot_texts(bare_harness.channel())
    assert len(pieces) == 3, [len(p) for p in pieces]
    assert all(len(p) <= 2000 for p in pieces)
    for piece in pieces:
        assert piece.count("```") % 2 == 0, "a message must close every fence it opens"
        assert not piece.endswith(MARKER)
    assert any(p.startswith("```python") for p in pieces[1:]), "the split fence is reopened with its language"
    joined = "\n".join(pieces)
    for i in range(45):
        assert f"compute_value({i}, factor={i * 3})" in joined
    assert joined.count("Sentence number 24 explains") == 2
    assert all(p["allowed_mentions"] == SAFE_MENTIONS.to_dict() for p in bare_harness.wire.payloads)


async def test_edits_are_throttled_and_the_last_edit_is_the_full_text(bare_harness: Harness):
    words = [f"word{i} " for i in range(60)]
    stream = PacedStream(bare_harness.clock, [(i * 0.1, w) for i, w in enumerate(words)])  # 60 chunks over 5.9 s
    await deliver(bare_harness, stream)

    updates = bare_harness.wire.updates
    assert len(bare_harness.wire.sends) == 1, "one message, edited in place"
    *interim, (_, last) = updates
    assert last == "".join(words).strip(), "the last edit carries the full text, without the marker"
    assert all(content.endswith(MARKER) for _, content in interim), "interim edits show the reply is unfinished"
    times = [at for at, _ in interim]
    assert times == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert all(b - a >= 1.0 for a, b in pairwise(times)), "at most one edit per interval"


async def test_the_edit_interval_comes_from_the_config(make_bare_harness):
    harness = await make_bare_harness(edit_interval=2.5)
    stream = PacedStream(harness.clock, [(i * 0.1, f"w{i} ") for i in range(60)])
    await deliver(harness, stream)
    *interim, (_, last) = harness.wire.updates
    times = [at for at, _ in interim]
    assert len(times) == 3 and all(b - a >= 2.5 for a, b in pairwise(times)), times
    assert last == "".join(f"w{i} " for i in range(60)).strip()


async def test_stream_edits_with_a_fake_clock():
    """The shared helper the adapter relies on: spacing, marker, final text."""
    clock = FakeClock()
    edits: list[tuple[float, str]] = []

    async def edit(text: str) -> None:
        edits.append((clock.now, text))

    stream = PacedStream(clock, [(i * 0.25, f"t{i} ") for i in range(20)])
    final = await stream_edits(stream, edit, EditThrottle(1.0, clock))
    times = [at for at, _ in edits[:-1]]
    assert all(b - a >= 1.0 for a, b in pairwise(times))
    assert edits[-1][1] == final == "".join(f"t{i} " for i in range(20)).strip()


async def test_model_written_mass_mentions_are_defused(bare_harness: Harness):
    stream = PacedStream(bare_harness.clock, [(0.0, "Hello @everyone and "), (2.0, "@here, "), (4.0, "<@&123> too")])
    await deliver(bare_harness, stream)
    (text,) = bare_harness.bot_texts(bare_harness.channel())
    assert "@everyone" not in text and "@here" not in text
    assert "@\u200beveryone" in text
    for payload in bare_harness.wire.payloads:
        assert payload["allowed_mentions"] == {"parse": [], "replied_user": True}


async def test_queue_position_shows_then_becomes_the_reply(bare_harness: Harness):
    future: asyncio.Future[ReplyStream] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(deliver(bare_harness, future, position=3))
    for _ in range(50):
        await asyncio.sleep(0)
        if bare_harness.bot_texts(bare_harness.channel()) and bare_harness.wire.typing:
            break
    assert bare_harness.bot_texts(bare_harness.channel()) == ["⏳ you're #3 in line…"]
    assert bare_harness.wire.typing >= 1, "typing is shown while queued"
    future.set_result(ReplyStream.from_text("Here is your answer."))
    await task
    assert bare_harness.bot_texts(bare_harness.channel()) == ["Here is your answer."]


async def test_first_in_line_shows_no_queue_notice(bare_harness: Harness):
    await deliver(bare_harness, ReplyStream.from_text("Quick answer."), position=1)
    assert bare_harness.bot_texts(bare_harness.channel()) == ["Quick answer."]
    assert not any("in line" in content for _, content in bare_harness.wire.updates)


async def test_a_failed_generation_shows_a_short_error_and_logs_the_traceback(bare_harness: Harness, caplog):
    original = RuntimeError("llama_decode returned -3")
    stream = PacedStream(bare_harness.clock, [(0.0, "Partial answer")], error=ModelError("generation failed", original))
    with caplog.at_level(logging.WARNING):
        await deliver(bare_harness, stream)
    (text,) = bare_harness.bot_texts(bare_harness.channel())
    assert text == "Partial answer\n\n⚠️ the reply failed: generation failed"
    assert "Traceback" not in text and "llama_decode" not in text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and logged[0].exc_info[1] is original


async def test_a_turn_that_never_starts_shows_the_reason(bare_harness: Harness):
    await deliver(bare_harness, UserError("no model is loaded; an admin can run: model load NAME"))
    assert bare_harness.bot_texts(bare_harness.channel()) == ["⚠️ no model is loaded; an admin can run: model load NAME"]


async def test_an_empty_reply_says_so(bare_harness: Harness):
    await deliver(bare_harness, ReplyStream.from_text("   "))
    (text,) = bare_harness.bot_texts(bare_harness.channel())
    assert "nothing to say" in text


def test_error_lines_are_short_and_never_tracebacks():
    assert error_line(UserError("slow down")) == "⚠️ slow down"
    assert error_line(ValueError("secret internals")) == "⚠️ the reply failed unexpectedly (details are in the log)"
    assert len(error_line(ModelError("x" * 1000))) < 230
