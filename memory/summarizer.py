"""Rolling summaries: fold the oldest turns into a summary before they fall out of the window.

Policy only: the token counter and the summary writer (the model) are passed in, so
memory never imports the engine. The rules:

- Compaction starts when the unsummarized history passes ``summarize_at`` of its budget,
  and evicts oldest turns until it is back under half of that, so it runs rarely and
  the prompt prefix (which contains the summary) changes rarely.
- A cut only falls on a turn boundary: just before a user message. The newest
  ``keep_recent`` messages always stay verbatim.
- The summary is capped at ``max_tokens``; the writer is asked for less and the result
  is trimmed at a sentence if it overshoots.
- A stale summary (a covered message was edited or deleted) is rebuilt from scratch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

CountTokens = Callable[[str], int]
WriteSummary = Callable[[str, Sequence["object"], int], Awaitable[str]]


@dataclass(frozen=True)
class CompactionPlan:
    """Which stored messages leave the verbatim history, and the id the summary will cover to."""

    evicted: tuple
    covers_through_id: int


# A summary keeps the gist; a 200 KB paste's first 16,000 characters carry it. Whole giant messages
# would be tokenized again and again on the event loop while a summary prompt is fitted.
MAX_SUMMARY_LINE_CHARS = 16_000


def message_line(message) -> str:
    """How a stored message reads inside a summary prompt (a giant message is cut, and says so)."""
    text = message.text
    if len(text) > MAX_SUMMARY_LINE_CHARS:
        text = text[:MAX_SUMMARY_LINE_CHARS] + " … [cut]"
    return f"{message.author_name}: {text}"


def plan_compaction(
    messages: Sequence,
    counts: Sequence[int],
    budget: int,
    *,
    summarize_at: float,
    keep_recent: int,
    force: bool = False,
) -> CompactionPlan | None:
    """Decide what to fold, or None when nothing should be (or can be) folded yet."""
    total = sum(counts)
    threshold = summarize_at * budget
    if not force and total <= threshold:
        return None
    limit = max(len(messages) - keep_recent, 0)
    target = threshold / 2 if not force else 0
    cut = 0
    remaining = total
    for index in range(limit):
        remaining -= counts[index]
        nxt = index + 1
        if nxt < len(messages) and messages[nxt].role == "user":
            cut = nxt
            if remaining <= target:
                break
    if cut == 0:
        return None
    evicted = tuple(messages[:cut])
    return CompactionPlan(evicted, evicted[-1].id)


def cap_summary(text: str, max_tokens: int, count_tokens: CountTokens) -> str:
    """Trim to the token cap, preferring to end at a sentence."""
    text = " ".join(text.split())
    if count_tokens(text) <= max_tokens:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(text[:middle]) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    clipped = text[:low]
    end = max(clipped.rfind(". "), clipped.rfind("! "), clipped.rfind("? "))
    return clipped[: end + 1] if end > len(clipped) // 2 else clipped.rstrip()


def chunk_for_prompt(messages: Sequence, count_tokens: CountTokens, room: int) -> list[list]:
    """Group messages so each group's lines fit ``room`` tokens (one oversized message is cut)."""
    groups: list[list] = [[]]
    used = 0
    for message in messages:
        size = count_tokens(message_line(message)) + 1
        if groups[-1] and used + size > room:
            groups.append([])
            used = 0
        groups[-1].append(message)
        used += size
    return [g for g in groups if g]


class Summarizer:
    """Runs compactions for one store; the engine schedules it at low priority."""

    def __init__(
        self,
        store,
        *,
        count_tokens: CountTokens,
        write_summary: WriteSummary,
        summarize_at: float = 0.75,
        keep_recent: int = 6,
        max_tokens: int = 200,
        prompt_room: int = 1024,
    ) -> None:
        self.store = store
        self.count_tokens = count_tokens
        self.write_summary = write_summary
        self.summarize_at = summarize_at
        self.keep_recent = keep_recent
        self.max_tokens = max_tokens
        self.prompt_room = prompt_room
        self.compactions = 0

    async def needs_work(self, conversation_id: int, budget: int) -> bool:
        summary = await self.store.summary(conversation_id)
        if summary is not None and summary.stale:
            return True
        messages, counts = await self._unsummarized(conversation_id, summary)
        return plan_compaction(
            messages, counts, budget, summarize_at=self.summarize_at, keep_recent=self.keep_recent
        ) is not None

    async def run(self, conversation_id: int, budget: int, *, force: bool = False) -> bool:
        """Rebuild a stale summary, then compact if over the threshold. True if the summary changed."""
        summary = await self.store.summary(conversation_id)
        changed = False
        if summary is not None and summary.stale:
            await self._rebuild(conversation_id, summary.covers_through_id)
            summary = await self.store.summary(conversation_id)
            changed = True
        messages, counts = await self._unsummarized(conversation_id, summary)
        plan = plan_compaction(
            messages, counts, budget, summarize_at=self.summarize_at, keep_recent=self.keep_recent, force=force
        )
        if plan is None:
            return changed
        text = await self._fold(summary.text if summary else "", plan.evicted)
        await self.store.save_summary(conversation_id, text, plan.covers_through_id)
        self.compactions += 1
        log.info("compacted %d messages of conversation %d", len(plan.evicted), conversation_id)
        return True

    async def _unsummarized(self, conversation_id: int, summary) -> tuple[list, list[int]]:
        after = summary.covers_through_id if summary else None
        messages = await self.store.messages(conversation_id, after_id=after)
        counts = []
        for message in messages:
            count = message.token_count
            if count is None or message.edited:
                count = self.count_tokens(message_line(message))
            counts.append(count)
        return messages, counts

    async def _fold(self, previous: str, messages: Sequence) -> str:
        text = previous
        for group in chunk_for_prompt(messages, self.count_tokens, self.prompt_room):
            text = await self.write_summary(text, group, self.max_tokens)
            text = cap_summary(text, self.max_tokens, self.count_tokens)
        return text

    async def _rebuild(self, conversation_id: int, covers_through_id: int) -> None:
        """Summarize every surviving covered message again, from nothing."""
        covered = [m for m in await self.store.messages(conversation_id) if m.id <= covers_through_id]
        if not covered:
            await self.store.clear_summary(conversation_id)
            return
        text = await self._fold("", covered)
        await self.store.save_summary(conversation_id, text, covers_through_id)
