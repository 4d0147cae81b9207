"""Summarizer policy with a fake writer (pure policy) over a real SQLite store."""

from __future__ import annotations

import pytest

from memory import ConversationKey, MemoryStore
from memory.summarizer import Summarizer, cap_summary, plan_compaction


def words(text: str) -> int:
    return len(text.split())


class FakeWriter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, previous: str, messages, max_tokens: int) -> str:
        self.calls.append((previous, [m.text for m in messages]))
        return f"summary#{len(self.calls)} of {len(messages)} lines"


@pytest.fixture
async def store(tmp_path):
    s = MemoryStore(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    await s.start()
    yield s
    await s.close()


async def fill(store, room, pairs: int) -> None:
    for i in range(pairs):
        await store.append(room, role="user", author_id="u", author_name="Ann", text=f"question {i} " * 5)
        await store.append(room, role="assistant", author_id="b", author_name="Bot", text=f"answer {i} " * 5)


async def test_cuts_before_a_user_turn_and_keeps_recent(store):
    room = await store.conversation_id(ConversationKey("t", "r"))
    await fill(store, room, 10)
    writer = FakeWriter()
    summarizer = Summarizer(store, count_tokens=words, write_summary=writer, summarize_at=0.5, keep_recent=4)
    assert await summarizer.run(room, budget=120)
    summary = await store.summary(room)
    remaining = await store.messages(room, after_id=summary.covers_through_id)
    assert remaining[0].role == "user", "a cut only falls on a turn boundary"
    assert len(remaining) >= 4
    assert summary.text == f"summary#1 of {20 - len(remaining)} lines"
    assert not await summarizer.run(room, budget=120), "under the threshold nothing changes"


async def test_no_compaction_below_threshold(store):
    room = await store.conversation_id(ConversationKey("t", "r"))
    await fill(store, room, 2)
    summarizer = Summarizer(store, count_tokens=words, write_summary=FakeWriter(), summarize_at=0.9, keep_recent=2)
    assert not await summarizer.run(room, budget=1000)
    assert await store.summary(room) is None


async def test_stale_summary_is_rebuilt_without_forgotten_messages(store):
    room = await store.conversation_id(ConversationKey("t", "r"))
    await fill(store, room, 6)
    writer = FakeWriter()
    summarizer = Summarizer(store, count_tokens=words, write_summary=writer, summarize_at=0.3, keep_recent=2)
    await summarizer.run(room, budget=100)
    covered = (await store.summary(room)).covers_through_id
    await store.forget_author(room, "u")
    assert (await store.summary(room)).stale
    await summarizer.run(room, budget=100)
    summary = await store.summary(room)
    assert not summary.stale and summary.covers_through_id == covered
    rebuilt_lines = writer.calls[-1][1] if len(writer.calls) >= 2 else []
    assert rebuilt_lines and all(line.startswith("answer") for line in rebuilt_lines)


def test_cap_summary_respects_the_token_cap():
    text = "One sentence here. " * 50
    capped = cap_summary(text, 30, words)
    assert words(capped) <= 30 and capped.endswith(".")


def test_plan_never_touches_the_newest_turns():
    class M:
        def __init__(self, i, role):
            self.id, self.role = i, role

    messages = [M(i, "user" if i % 2 == 0 else "assistant") for i in range(8)]
    plan = plan_compaction(messages, [100] * 8, 100, summarize_at=0.5, keep_recent=6, force=True)
    assert plan is not None and plan.covers_through_id == 1
    assert plan_compaction(messages, [100] * 8, 100, summarize_at=0.5, keep_recent=8, force=True) is None


def test_a_giant_message_is_cut_in_summary_prompts():
    """Fitting a summary prompt tokenizes its lines repeatedly on the event loop: keep them bounded."""
    from types import SimpleNamespace

    from memory.summarizer import MAX_SUMMARY_LINE_CHARS, message_line

    giant = SimpleNamespace(author_name="Ann", text="x" * 200_000)
    line = message_line(giant)
    assert line.startswith("Ann: xxx") and line.endswith("[cut]")
    assert len(line) < MAX_SUMMARY_LINE_CHARS + 50
    assert message_line(SimpleNamespace(author_name="Bo", text="short")) == "Bo: short"
