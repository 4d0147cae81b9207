"""Recall at each turn: old lines of this room that the newest message asks about.

The room's full-text index (``memory.recall_index``) is queried with the newest user
message(s). Hits still in the prompt's recent turns are skipped, weak hits are dropped (a
prompt without recall is cheaper than one with noise: every recalled token is evaluated on
every turn that has it), and the rest are fitted into ``memory.recall_tokens`` as dated
lines with speakers. The block goes into the volatile tail of the prompt, after the cached
prefix, so recall never invalidates the evaluated summary and persona.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine.context import defuse_markup
from memory import MemoryStore, SearchHit, StoredMessage

RECALL_HEADER = "Earlier in this conversation:"
MIN_SCORE = 0.5  # share of the query's uncommon words a line must hold to be recalled
CANDIDATES = 8
QUERY_CHARS = 2_000
LINE_CHARS = 400


def recall_query(stored: Sequence[StoredMessage]) -> str:
    """The newest user message, alone: joining several would dilute each one's words below the
    relevance threshold. Its end, when long (where the question usually is)."""
    for message in reversed(stored):
        if message.role == "user":
            return message.text[-QUERY_CHARS:]
    return ""


async def recall(store: MemoryStore, conversation_id: int, stored: Sequence[StoredMessage]) -> list[SearchHit]:
    """Relevant hits for the newest message that are not among ``stored`` (the turns in view)."""
    query = recall_query(stored)
    if not query:
        return []
    in_view = {message.id for message in stored}
    # the turns in view (the newest message first of all) match best: ask for enough to get past them
    hits = await store.search(conversation_id, query, CANDIDATES + min(len(in_view), 4 * CANDIDATES))
    return [hit for hit in hits if hit.message_id not in in_view and hit.score >= MIN_SCORE][:CANDIDATES]


def recall_line(hit: SearchHit) -> str:
    text = " ".join(hit.text.split())
    if len(text) > LINE_CHARS:
        text = text[: LINE_CHARS - 1] + "…"
    return defuse_markup(f"[{hit.created_at:%Y-%m-%d %H:%M}] {hit.speaker}: {text}")  # users wrote it


def recall_block(hits: Sequence[SearchHit], budget: int, count_tokens: Callable[[str], int]) -> str:
    """The best hits that fit ``budget`` tokens, oldest first, under a header; '' if none fits.

    Blocking (it tokenizes): call it off the event loop.
    """
    if budget <= 0 or not hits:
        return ""
    used = count_tokens(RECALL_HEADER)
    chosen: list[tuple[int, str]] = []
    for hit in hits:  # best first
        line = recall_line(hit)
        cost = count_tokens("\n" + line)
        if used + cost <= budget:
            chosen.append((hit.message_id, line))
            used += cost
    if not chosen:
        return ""
    return "\n".join([RECALL_HEADER, *(line for _, line in sorted(chosen))])


__all__ = ["RECALL_HEADER", "recall", "recall_block", "recall_query"]
