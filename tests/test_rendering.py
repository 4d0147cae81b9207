"""Splitting, defused mentions and the edit throttle (fake clock, no sleeping)."""

from __future__ import annotations

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
