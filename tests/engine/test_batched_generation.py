"""Several rooms generating at once in one context (``model.parallel`` > 1), on the real model.

No timing asserts: what is checked is what the batch must never do (mix up sequences,
drop a room, freeze the streaming rooms for a joiner's whole prompt), by text and by the
order in which events arrive.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import llama_cpp
import pytest

from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.llama_backend import LlamaBackend
from engine.reply import Done, ReplyStream, TextChunk
from engine.sampling import SamplingParams
from engine.settings import ModelOptions

GREEDY = SamplingParams(temperature=0.0, max_tokens=40)
QUESTIONS = ["Name three fruits.", "What is the capital of France?", "Write a haiku about snow."]


async def loaded(path: Path, parallel: int, **options) -> LlamaBackend:
    options = ModelOptions(n_ctx=1024, n_threads=2, parallel=parallel, **options)
    backend = LlamaBackend(ModelSpec("smollm2", path, options))
    await backend.load()
    return backend


@pytest.fixture
async def batched(smol_path):
    backend = await loaded(smol_path, 3)
    yield backend
    await backend.close()


def prompt(backend: LlamaBackend, text: str, system: str = "You are a helpful assistant.") -> list[int]:
    return backend.tokenize(backend.render([ChatMessage("system", system), ChatMessage("user", text)]))


async def arrivals(reply: ReplyStream, log: list[tuple[str, object]], name: str) -> None:
    """Record every event of ``reply`` in one shared log, in the order they reach the loop."""
    async for event in reply.events():
        log.append((name, event))


async def test_rooms_at_once_get_the_text_they_get_alone(batched, smol_path):
    prompts = [prompt(batched, q) for q in QUESTIONS]
    alone = [await batched.stream(GenerationRequest(p, GREEDY, f"alone-{i}")).text() for i, p in enumerate(prompts)]
    replies = [batched.stream(GenerationRequest(p, GREEDY, f"together-{i}")) for i, p in enumerate(prompts)]
    together = await asyncio.gather(*(reply.text() for reply in replies))
    assert all(text.strip() for text in alone)
    assert list(together) == alone
    assert len(set(alone)) == len(alone), "each room answers its own question"
    single = await loaded(smol_path, 1)
    try:
        serial = [await single.stream(GenerationRequest(p, GREEDY, f"s-{i}")).text() for i, p in enumerate(prompts)]
    finally:
        await single.close()
    assert serial == alone, "the batched loop samples as the single path does"


async def test_cancelled_room_stops_and_the_others_go_on(batched):
    batched.banned_tokens = (batched._llm.token_eos(),)  # every reply runs to max_tokens
    sampling = SamplingParams(temperature=0.0, max_tokens=48)
    replies = [batched.stream(GenerationRequest(prompt(batched, q), sampling, q)) for q in QUESTIONS]
    async for _ in replies[1]:
        replies[1].cancel()
        break
    await asyncio.gather(*(reply.text() for reply in replies))
    stats = [reply.stats for reply in replies]
    assert stats[1].finish_reason == "cancelled" and stats[1].completion_tokens < 48
    assert [s.finish_reason for s in (stats[0], stats[2])] == ["length", "length"]
    assert stats[0].completion_tokens == stats[2].completion_tokens == 48


async def test_a_long_cold_prompt_joins_without_freezing_the_streaming_room(batched):
    batched.banned_tokens = (batched._llm.token_eos(),)
    log: list[tuple[str, object]] = []
    story = SamplingParams(temperature=0.0, max_tokens=160)
    streaming = batched.stream(GenerationRequest(prompt(batched, "Tell a long story."), story, "a"))
    watch_a = asyncio.create_task(arrivals(streaming, log, "a"))
    while sum(1 for name, _ in log if name == "a") < 3:
        await asyncio.sleep(0.01)
    lore = " ".join(f"Fact {i}: the tower of Myr has {i} bells." for i in range(60))
    cold = prompt(batched, "Which tower has bells?", system=lore)
    assert len(cold) > 900, "the joiner's prompt must take many chunks (15 of 64 tokens)"
    log.append(("joined", None))
    joiner = batched.stream(GenerationRequest(cold, SamplingParams(temperature=0.0, max_tokens=8), "b"))
    await asyncio.gather(arrivals(joiner, log, "b"), watch_a)
    names = [name for name, _ in log]
    joined, first_b = names.index("joined"), names.index("b")
    during = [event for name, event in log[joined:first_b] if name == "a" and isinstance(event, TextChunk)]
    assert len(during) >= 10, f"the streaming room got only {len(during)} chunks during the joiner's prompt"
    assert isinstance(log[-1][1], Done) and joiner.stats.completion_tokens == 8
    assert streaming.stats.completion_tokens == 160
    assert joiner.stats.prefilled_tokens == 0, "beside a streaming room a prompt joins the batch"
    assert joiner.stats.evaluated_prompt_tokens == len(cold)


async def test_more_rooms_than_sequences_queue_and_are_served_in_order(smol_path):
    backend = await loaded(smol_path, 2)
    try:
        log: list[tuple[str, object]] = []
        replies = {
            name: backend.stream(GenerationRequest(prompt(backend, q), GREEDY, name))
            for name, q in zip("xyz", QUESTIONS, strict=True)
        }
        await asyncio.gather(*(arrivals(reply, log, name) for name, reply in replies.items()))
        assert all(reply.stats.finish_reason in ("stop", "length") for reply in replies.values())
        first_done = next(i for i, (_, event) in enumerate(log) if isinstance(event, Done))
        z_first = next(i for i, (name, _) in enumerate(log) if name == "z")
        assert z_first > first_done, "the third room waits for a sequence, then gets one"
        assert all(name in "xy" for name, _ in log[:first_done])
    finally:
        await backend.close()


async def test_prompt_work_follows_arrival_not_the_sequence_number(batched):
    """A room that got a sequence first has its prompt evaluated first, even when a later room
    lands in a lower sequence (one freed by another room): prompt chunks beside a streaming
    room go to the earliest joiner, so the later one cannot pass it."""
    batched.banned_tokens = (batched._llm.token_eos(),)
    log: list[tuple[str, object]] = []
    story = SamplingParams(temperature=0.0, max_tokens=400)
    streaming = batched.stream(GenerationRequest(prompt(batched, "Tell a long story."), story, "x"))
    watch_x = asyncio.create_task(arrivals(streaming, log, "x"))
    brief = batched.stream(GenerationRequest(prompt(batched, "Hi"), SamplingParams(max_tokens=1), "y"))
    await brief.text()  # its sequence is now idle, holding its cells: the one a newcomer takes last
    one_token = SamplingParams(temperature=0.0, max_tokens=1)
    lore = {
        name: " ".join(f"Fact {i}: the {thing} of Myr has {i} bells." for i in range(25))
        for name, thing in (("a", "tower"), ("b", "harbour"))
    }
    first = batched.stream(GenerationRequest(prompt(batched, "Which?", system=lore["a"]), one_token, "a"))
    while batched.generating < 2:  # "a" holds the empty sequence, after "x"'s
        await asyncio.sleep(0.001)
    second = batched.stream(GenerationRequest(prompt(batched, "Which?", system=lore["b"]), one_token, "b"))
    await asyncio.gather(arrivals(first, log, "a"), arrivals(second, log, "b"))
    streaming.cancel()
    await watch_x
    assert first.stats.evaluated_prompt_tokens > 3 * 64, "the first room's prompt takes several steps"
    answered = [name for name, event in log if name in "ab" and isinstance(event, TextChunk)]
    assert answered[:1] == ["a"], f"the later room was answered first: {answered}"


async def test_a_parked_room_is_restored_with_its_prefix(smol_path, tmp_path):
    backend = await loaded(smol_path, 2, state_cache_dir=tmp_path)
    try:
        system = " ".join(f"Fact {i}: the river has {i} fish." for i in range(30))
        first = prompt(backend, "How many fish?", system=system)
        reply = backend.stream(GenerationRequest(first, GREEDY, "parked"))
        await reply.text()
        for other in ("p", "q"):  # two other rooms take both sequences: "parked" is parked
            await backend.stream(GenerationRequest(prompt(backend, "Hi", system=other), GREEDY, other)).text()
        again = backend.stream(GenerationRequest(first, GREEDY, "parked"))
        assert await again.text() == await reply.text()
        assert again.stats.restored_state
        assert again.stats.evaluated_prompt_tokens == 1, "only the last prompt token is evaluated again"
    finally:
        await backend.close()
    # A fresh process finds it on disk.
    backend = await loaded(smol_path, 2, state_cache_dir=tmp_path)
    try:
        warm = backend.stream(GenerationRequest(first, GREEDY, "parked"))
        await warm.text()
        assert warm.stats.restored_state and warm.stats.evaluated_prompt_tokens == 1
    finally:
        await backend.close()


async def test_cancel_in_the_middle_of_a_lone_prompt(batched):
    """A turn cancelled once it holds a sequence ends with no tokens, and the sequence stays usable."""
    lore = " ".join(f"Fact {i}: the tower of Myr has {i} bells." for i in range(55))
    reply = batched.stream(GenerationRequest(prompt(batched, "Bells?", system=lore), GREEDY, "m"))
    while batched.generating == 0:  # the prompt's first chunk is being evaluated
        await asyncio.sleep(0.001)
    reply.cancel()
    assert await reply.text() == ""
    assert reply.stats.finish_reason == "cancelled" and reply.stats.completion_tokens == 0
    after = batched.stream(GenerationRequest(prompt(batched, "Hello"), GREEDY, "m"))
    assert (await after.text()).strip(), "the sequence works after the cancel"


async def test_a_state_saved_with_another_parallel_is_not_offered_to_llama(smol_path, tmp_path, caplog):
    """llama.cpp refuses a sequence state from a context with another number of KV streams."""
    tokens_for = None
    for parallel in (2, 1):
        backend = await loaded(smol_path, parallel, state_cache_dir=tmp_path)
        try:
            tokens_for = tokens_for or prompt(backend, "What is the capital of France?")
            reply = backend.stream(GenerationRequest(tokens_for, GREEDY, "room"))
            await reply.text()
        finally:
            await backend.close()  # flushes the room's state to disk
    assert "could not restore" not in caplog.text
    assert not reply.stats.restored_state


async def one_after_another(path: Path, prompts: dict[str, list[int]], share: bool, cache: Path) -> tuple[dict, dict]:
    """Each room's greedy text and evaluated prompt tokens, one after another on two sequences."""
    backend = await loaded(path, 2, state_cache_dir=cache)
    assert backend._decoder is not None
    backend._decoder.share_prefixes = share
    texts, evaluated = {}, {}
    try:
        for room, tokens in prompts.items():
            reply = backend.stream(GenerationRequest(tokens, GREEDY, room))
            texts[room] = await reply.text()
            evaluated[room] = reply.stats.evaluated_prompt_tokens
    finally:
        await backend.close()
    return texts, evaluated


async def all_at_once(path: Path, prompts: dict[str, list[int]], share: bool, cache: Path) -> tuple[dict, dict]:
    """Each room's greedy text and evaluated prompt tokens, all sent at once, one sequence each."""
    backend = await loaded(path, len(prompts), flash_prefill=False, state_cache_dir=cache)
    assert backend._decoder is not None
    backend._decoder.share_prefixes = share
    try:
        replies = {room: backend.stream(GenerationRequest(tokens, GREEDY, room)) for room, tokens in prompts.items()}
        texts = dict(zip(replies, await asyncio.gather(*(r.text() for r in replies.values())), strict=True))
    finally:
        await backend.close()
    return texts, {room: reply.stats.evaluated_prompt_tokens for room, reply in replies.items()}


@pytest.mark.parametrize("send", [one_after_another, all_at_once], ids=["one-after-another", "all-at-once"])
async def test_a_cold_room_starts_from_the_shared_persona_cells_of_another(smol_path, tmp_path, send):
    """Rooms with one persona share their system prompt: a room without a state of its own
    evaluates only what differs. One after another, the cells are copied from another sequence
    (``b``, given an empty one) or kept from the room parked out of its sequence (``c``). All at
    once (a burst of new rooms), ``b`` and ``c`` wait for ``a`` to evaluate the persona and copy
    it, instead of evaluating the same tokens beside it."""
    persona = " ".join(f"Rule {i}: the keeper of the lighthouse answers kindly." for i in range(20))
    backend = await loaded(smol_path, 1)
    try:
        prompts = {room: prompt(backend, q, system=persona) for room, q in zip("abc", QUESTIONS, strict=True)}
        shared = len(prompt(backend, "", system=persona)) - 8
    finally:
        await backend.close()
    texts, evaluated = await send(smol_path, prompts, True, tmp_path / "shared")
    assert evaluated["a"] == len(prompts["a"])
    for room in "bc":
        assert evaluated[room] <= len(prompts[room]) - shared, f"room {room} evaluated the shared persona again"
    alone, evaluated_alone = await send(smol_path, prompts, False, tmp_path / "alone")
    assert evaluated_alone == {room: len(tokens) for room, tokens in prompts.items()}
    assert texts == alone, "cells of the same tokens give the same text, whoever evaluated them"


async def test_a_long_cold_prompt_is_prefilled_with_flash_attention_and_answers_as_plainly(smol_path):
    """Batched, a long cold prompt is evaluated in the flash-attention context and its cells are
    moved into the room's sequence: the first greedy token is the one the plain path picks."""
    lore = " ".join(f"Fact {i}: the tower of Myr has {i} bells." for i in range(30))
    first: dict[bool, str] = {}
    for flash in (True, False):
        backend = await loaded(smol_path, 2, flash_prefill=flash)
        try:
            cold = prompt(backend, "Which tower has bells?", system=lore)
            one = backend.stream(GenerationRequest(cold, SamplingParams(temperature=0.0, max_tokens=1), "r"))
            first[flash] = await one.text()
            assert one.stats.prefilled_tokens == (len(cold) - 1 if flash else 0)
            assert one.stats.evaluated_prompt_tokens == len(cold)
            warm = prompt(backend, "Which tower has bells? Tell me more.", system=lore)
            more = backend.stream(GenerationRequest(warm, GREEDY, "r"))
            assert (await more.text()).strip()
            assert more.stats.prefilled_tokens == 0, "the warm turn stays in the plain context"
            assert more.stats.evaluated_prompt_tokens < 20
        finally:
            await backend.close()
    assert first[True] == first[False] and first[True].strip()


async def test_a_room_joining_during_a_flash_attention_prefill_is_answered_after_it(smol_path):
    """While no room streams, a long cold prompt goes through the flash-attention context whole,
    and a room joining meanwhile waits for it (as joiners wait for each other's chunks). Both
    are answered, the long one as the plain path answers it."""
    lore = " ".join(f"Fact {i}: the tower of Myr has {i} bells." for i in range(55))
    one_token = SamplingParams(temperature=0.0, max_tokens=1)
    answers: dict[bool, str] = {}
    for flash in (True, False):
        backend = await loaded(smol_path, 2, flash_prefill=flash)
        try:
            cold = prompt(backend, "Which tower has bells?", system=lore)
            reply = backend.stream(GenerationRequest(cold, one_token, "long"))
            while backend.generating == 0:
                await asyncio.sleep(0.001)
            other = backend.stream(GenerationRequest(prompt(backend, "Hello"), GREEDY, "short"))
            answers[flash], said = await asyncio.gather(reply.text(), other.text())
            assert said.strip()
            assert reply.stats.evaluated_prompt_tokens == len(cold)
            assert reply.stats.prefilled_tokens == (len(cold) - 1 if flash else 0)
            assert other.stats.prefilled_tokens == 0
        finally:
            await backend.close()
    assert answers[True] == answers[False] and answers[True].strip()


async def test_a_cancel_during_a_flash_attention_prefill(smol_path):
    """A turn cancelled while its prompt is in the flash-attention context ends with no tokens;
    the next turn of the room is answered."""
    backend = await loaded(smol_path, 2)
    try:
        lore = " ".join(f"Fact {i}: the tower of Myr has {i} bells." for i in range(55))
        tokens = prompt(backend, "Bells?", system=lore)
        assert len(tokens) > 512, "more than one chunk of the flash-attention context"
        reply = backend.stream(GenerationRequest(tokens, GREEDY, "m"))
        while backend.generating == 0:
            await asyncio.sleep(0.001)
        reply.cancel()
        assert await reply.text() == ""
        assert reply.stats.finish_reason == "cancelled" and reply.stats.completion_tokens == 0
        assert reply.stats.prefilled_tokens < len(tokens) - 1
        after = backend.stream(GenerationRequest(prompt(backend, "Hello"), GREEDY, "m"))
        assert (await after.text()).strip()
    finally:
        await backend.close()


async def test_prompt_steps_take_model_n_batch_not_the_tokenizer_contexts_cap(smol_path):
    """The batched path's Llama only tokenizes, with a 256-token context that caps its own batch;
    the batch and flash-prefill contexts must still evaluate ``model.n_batch`` tokens a step."""
    backend = await loaded(smol_path, 2, n_batch=512, n_ubatch=512)
    try:
        assert backend._decoder is not None and backend._prefill is not None
        assert backend._decoder.n_batch == 512 and backend._decoder.n_ubatch == 512
        assert backend._prefill._n_batch == 512
        assert llama_cpp.llama_n_batch(backend._decoder.ctx) == 512
    finally:
        await backend.close()

