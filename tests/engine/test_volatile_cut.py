"""Last turn's volatile block is cut out of a room's cells at its next turn, on the real model.

The next prompt holds last turn's user line and reply without the block that sat before them;
cutting the block's cells (and shifting the rest back) lets the turn reuse them instead of
evaluating them again. Counts are checked, never times.
"""

from __future__ import annotations

import pytest

from engine.backend import GenerationRequest, ModelSpec
from engine.context import Turn, assemble
from engine.llama_backend import LlamaBackend
from engine.sampling import SamplingParams
from engine.settings import ModelOptions
from engine.volatile_span import VolatileSpans, span_between

SYSTEM = "You are Hearth, a friendly innkeeper who answers briefly."
GREEDY = SamplingParams(temperature=0.0, max_tokens=12)
FIRST_BLOCK = "Earlier in this conversation:\n[2026-01-03 10:00] Ann: My sister Bea keeps bees near the old mill."
REPLY_END = 6
SECOND_BLOCK = "Earlier in this conversation:\n[2026-02-11 18:30] Cal: The ferry to Dunmore leaves at seven sharp."


def prompt_for(backend: LlamaBackend, turns: list[Turn], volatile: str):
    n_ctx = backend.spec.options.n_ctx
    return assemble(backend, system=SYSTEM, turns=turns, n_ctx=n_ctx, reserve=64, volatile=volatile)


async def loaded(path, parallel: int = 1) -> LlamaBackend:
    backend = LlamaBackend(ModelSpec("smollm2", path, ModelOptions(n_ctx=1024, n_threads=2, parallel=parallel)))
    await backend.load()
    return backend


async def two_turns(backend: LlamaBackend, room: str, *, declare: bool = True, between=None):
    """Turn one with FIRST_BLOCK, then turn two (history grown by the reply) with SECOND_BLOCK."""
    turns = [Turn("user", "Ann", "Do you know anyone who keeps bees?")]
    first = prompt_for(backend, turns, FIRST_BLOCK)
    reply = backend.stream(GenerationRequest(first.tokens, GREEDY, room, first.volatile_span if declare else None))
    answer = await reply.text()
    if between is not None:
        between()
    turns += [Turn("assistant", "Hearth", answer), Turn("user", "Ann", "And when does the ferry leave?")]
    second = prompt_for(backend, turns, SECOND_BLOCK)
    reply = backend.stream(GenerationRequest(second.tokens, GREEDY, room, second.volatile_span if declare else None))
    text = await reply.text()
    return first, second, reply.stats, text


@pytest.fixture
async def single(smol_path):
    backend = await loaded(smol_path)
    yield backend
    await backend.close()


def test_the_span_is_exactly_what_the_prompt_without_the_block_lacks(single):
    turns = [Turn("user", "Ann", "Hello there!")]
    with_block = prompt_for(single, turns, FIRST_BLOCK)
    without = prompt_for(single, turns, "")
    assert with_block.volatile_span is not None and without.volatile_span is None
    start, end = with_block.volatile_span
    assert with_block.tokens[:start] + with_block.tokens[end:] == without.tokens
    assert "bees near the old mill" in single._llm.detokenize(with_block.tokens[start:end]).decode()


async def test_the_next_turn_cuts_the_old_block_instead_of_evaluating_after_it(single, smol_path):
    first, second, stats, text = await two_turns(single, "room-a")
    start, end = first.volatile_span
    assert stats.cut_tokens == end - start
    assert text.strip(), "the model still answers after the cut"
    new_start, _ = second.volatile_span
    # the old user line and reply are reused: what is evaluated is the new block, what follows it,
    # and the reply's end (its last token and end-of-turn markup were never evaluated)
    assert len(second.tokens) - new_start <= stats.evaluated_prompt_tokens <= len(second.tokens) - new_start + REPLY_END
    undeclared = await loaded(smol_path)
    try:
        _, _, kept_stats, _ = await two_turns(undeclared, "room-a", declare=False)
    finally:
        await undeclared.close()
    assert kept_stats.cut_tokens == 0
    assert kept_stats.evaluated_prompt_tokens >= stats.evaluated_prompt_tokens + (end - start) // 2


async def test_a_room_that_lost_messages_is_evaluated_again(single):
    """forget-me, reset, a deleted message: cells computed with it in view must not serve again."""
    _, _, stats, _ = await two_turns(single, "room-b", between=lambda: single.invalidate_room("room-b"))
    assert stats.cut_tokens == 0


async def test_the_batched_path_cuts_the_block_too(smol_path):
    backend = await loaded(smol_path, parallel=2)
    try:
        first, second, stats, _ = await two_turns(backend, "room-c")
    finally:
        await backend.close()
    start, end = first.volatile_span
    assert stats.cut_tokens == end - start
    assert stats.evaluated_prompt_tokens <= len(second.tokens) - second.volatile_span[0] + REPLY_END


def test_only_the_declared_block_is_ever_cut():
    held = [1, 2, 3, 10, 11, 12, 4, 5, 6, 7, 8, 9, 20, 21, 22, 23, 24, 25, 26, 27]
    spans = VolatileSpans()
    spans.record("room", held[:12], (3, 6))
    drop = spans.plan("room", held, [1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22, 23, 24, 25, 26, 27, 30, 31])
    assert drop is not None and (drop.start, drop.end) == (3, 6)
    assert drop.kept == [1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22, 23, 24, 25, 26, 27]
    # a message gone from the middle of the history (not the block): nothing is cut
    assert spans.plan("room", held, [1, 2, 3, 10, 11, 12, 7, 8, 9, 20, 21, 22, 23, 24, 25]) is None
    assert spans.plan("other", held, [1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22, 23, 24, 25, 26]) is None
    spans.forget("room")
    assert spans.plan("room", held, [1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22, 23, 24, 25, 26, 27]) is None


def test_cast_members_spans_go_with_their_room():
    spans = VolatileSpans()
    for key in ("room", "room#ann", "room2#ann"):
        spans.record(key, list(range(20)), (2, 5))
    spans.forget("room")
    held, prompt = list(range(20)), [0, 1, *range(5, 20), 99]
    assert spans.plan("room#ann", held, prompt) is None
    assert spans.plan("room2#ann", held, prompt) is not None


def test_span_between_needs_one_clean_stretch():
    assert span_between([1, 2, 9, 9, 3], [1, 2, 3]) == (2, 4)
    assert span_between([1, 2, 3], [1, 2, 3]) is None
    assert span_between([1, 9, 2, 8, 3], [1, 2, 3]) is None


def test_the_turns_in_view_do_not_change_with_whether_a_turn_recalls(single):
    """The recall budget is held back on every turn: a window that lost its oldest turn whenever
    a block came would re-evaluate the whole history then, and again when it went."""
    from datetime import datetime

    from engine.prompting import _assemble_fitted
    from memory import SearchHit

    turns = [
        Turn("user", "Ann", f"Line {i}: " + "tell me more about the weather " * 3)
        if i % 2 == 0
        else Turn("assistant", "Hearth", f"Reply {i}: " + "it is sunny and warm today " * 3)
        for i in range(81)
    ]
    hit = SearchHit(1, datetime(2026, 1, 3, 10, 0), "Ann", "user", "My sister Bea keeps bees near the old mill.", 1.0)
    fitted = {
        name: _assemble_fitted(single, turns, 64, (hits, 150), system=SYSTEM, summary="", volatile="")
        for name, hits in (("recalls", [hit]), ("does not", []))
    }
    recalls, plain = fitted["recalls"], fitted["does not"]
    assert recalls.turns_included == plain.turns_included < len(turns)
    start, _ = recalls.volatile_span
    assert recalls.tokens[:start] == plain.tokens[:start], "the evaluated history stays reusable"
    assert "bees near the old mill" in single._llm.detokenize(recalls.tokens).decode()
