"""Splitting, defused mentions and the edit throttle (fake clock, no sleeping)."""

from __future__ import annotations

import asyncio
from itertools import pairwise

from adapters.rendering import UNFINISHED_MARKER, EditThrottle, defuse_mentions, split_message, stream_edits


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_split_keeps_code_fences_whole():
    text = "Intro.\n\n" + "word " * 300 + "\n\n```python\n" + "print('x')\n" * 300 + "```\nThe end. " + "z " * 400
    pieces = split_message(text, 2000)
    assert len(pieces) >= 3
    assert all(len(p) <= 2000 for p in pieces)
    for piece in pieces:
        assert piece.count("```") % 2 == 0, "every piece must close the fences it opens"
    assert any(p.startswith("```python\n") for p in pieces[1:]), "a split fence is reopened with its language"
    joined = "".join(pieces)
    assert joined.count("print('x')") == 300


def test_split_prefers_paragraphs_then_sentences():
    text = "First paragraph. " * 50 + "\n\n" + "Second one. " * 50
    pieces = split_message(text, 1000)
    assert pieces[0].endswith("First paragraph.")
    assert all(p.rstrip()[-1] in ".!?" for p in pieces[:-1])


def test_mass_mentions_are_defused():
    text = defuse_mentions("hey @everyone and @here and @room, mail me@everyone.com")
    assert "@everyone " not in text and "@here" not in text and "@room" not in text
    assert "@\u200beveryone" in text


async def chunks_at(clock: FakeClock, pieces: list[tuple[float, str]]):
    for at, text in pieces:
        clock.now = at
        yield text


async def test_throttle_allows_one_edit_per_interval_and_final_is_full():
    clock = FakeClock()
    edits: list[tuple[float, str]] = []

    async def edit(text: str) -> None:
        edits.append((clock.now, text))

    pieces = [(t / 10, f"w{t} ") for t in range(35)]  # 35 chunks over 3.4 s
    final = await stream_edits(chunks_at(clock, pieces), edit, EditThrottle(1.0, clock))
    times = [at for at, _ in edits]
    assert all(b - a >= 1.0 for a, b in pairwise(times[:-1]))
    assert len(edits) <= 5
    assert edits[-1][1] == final == "".join(t for _, t in pieces).strip()
    assert all(text.endswith(UNFINISHED_MARKER) for _, text in edits[:-1])
    assert not edits[-1][1].endswith(UNFINISHED_MARKER)


async def test_max_edits_caps_the_edits_and_the_last_one_has_the_whole_text():
    clock = FakeClock()
    updates: list[str] = []

    async def show(text: str) -> None:
        updates.append(text)

    pieces = [(float(t), f"w{t} ") for t in range(30)]  # every chunk a full interval apart: all would be shown
    throttle = EditThrottle(1.0, clock, max_edits=4)
    final = await stream_edits(chunks_at(clock, pieces), show, throttle)
    send, *edits = updates
    assert len(edits) == 4 == throttle.edits, "the first update is the send; then at most max_edits edits"
    assert edits[-1] == final == "".join(t for _, t in pieces).strip()
    assert all(text.endswith(UNFINISHED_MARKER) for text in [send, *edits[:-1]])


async def test_max_edits_of_one_leaves_only_the_final_edit():
    clock = FakeClock()
    updates: list[str] = []

    async def show(text: str) -> None:
        updates.append(text)

    pieces = [(float(t), f"w{t} ") for t in range(10)]
    await stream_edits(chunks_at(clock, pieces), show, EditThrottle(1.0, clock, max_edits=1))
    assert updates == ["w0 " + UNFINISHED_MARKER, "".join(t for _, t in pieces).strip()]


async def test_a_queue_notice_is_the_send_so_the_reply_text_counts_as_edits():
    from adapters.rendering import present_reply, queue_notice
    from engine.reply import Done, ReplyStream, TextChunk

    ticks = iter(range(10_000))
    updates: list[str] = []

    def clock() -> float:
        return float(next(ticks))  # a second passes at every look: only the cap limits the edits

    async def show(text: str) -> None:
        updates.append(text)

    async def no_typing() -> None:
        return None

    stream = ReplyStream()
    for i in range(20):
        stream.push(TextChunk(f"t{i} "))
    stream.push(Done())
    future = asyncio.get_running_loop().create_future()
    future.set_result(stream)
    await present_reply(future, show, EditThrottle(1.0, clock, max_edits=3), send_typing=no_typing, position=2)
    notice, *edits = updates
    assert notice == queue_notice(2)
    assert len(edits) == 3
    assert edits[-1] == "".join(f"t{i} " for i in range(20)).strip()
