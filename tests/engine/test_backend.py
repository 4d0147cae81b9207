"""Real generation on the default model, off the event loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.llama_backend import LlamaBackend
from engine.reply import ReasoningChunk, TextChunk
from engine.sampling import SamplingParams
from engine.settings import ModelOptions


@pytest.fixture
async def smol(smol_path):
    backend = LlamaBackend(ModelSpec("smollm2", smol_path, ModelOptions(n_ctx=1024, n_threads=2)))
    await backend.load()
    yield backend
    await backend.close()


def prompt(backend: LlamaBackend, text: str) -> list[int]:
    messages = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", text)]
    return backend.tokenize(backend.render(messages))


async def test_streams_tokens_and_stats(smol):
    reply = smol.stream(GenerationRequest(prompt(smol, "Name three colors."), SamplingParams(max_tokens=40)))
    chunks = [chunk async for chunk in reply]
    assert len(chunks) > 3, "a reply must arrive as several chunks"
    text = await reply.text()
    assert text == "".join(chunks) and text.strip()
    assert reply.stats.completion_tokens > 3
    assert reply.stats.prompt_tokens == len(prompt(smol, "Name three colors."))


async def test_event_loop_stays_responsive_during_generation(smol):
    ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    reply = smol.stream(GenerationRequest(prompt(smol, "Tell me a story."), SamplingParams(max_tokens=64)))
    chunks_seen_with_ticks = []
    async for _ in reply:
        chunks_seen_with_ticks.append(ticks)
    done.set()
    await task
    assert reply.stats.completion_tokens >= 10
    # The ticker kept running between chunks: the loop was never blocked by generation.
    assert chunks_seen_with_ticks[-1] > chunks_seen_with_ticks[0]
    assert ticks >= 5


async def test_prefix_is_reused_on_the_next_turn(smol):
    tokens = prompt(smol, "What is the capital of France?")
    first = smol.stream(GenerationRequest(tokens, SamplingParams(max_tokens=8)))
    await first.text()
    second = smol.stream(GenerationRequest(tokens, SamplingParams(max_tokens=8)))
    await second.text()
    assert first.stats.evaluated_prompt_tokens == len(tokens)
    assert second.stats.evaluated_prompt_tokens < 5


async def test_cancel_stops_quickly(smol):
    reply = smol.stream(GenerationRequest(prompt(smol, "Count to one hundred."), SamplingParams(max_tokens=400)))
    async for _ in reply:
        reply.cancel()
    await reply.text()
    assert reply.stats.finish_reason == "cancelled"
    assert reply.stats.completion_tokens < 20


def long_prompt(backend: LlamaBackend, min_tokens: int) -> list[int]:
    """A distinct persona-sized prompt of at least ``min_tokens`` tokens."""
    lines = ["You keep the harbour records. Answer in one short sentence."]
    while True:
        start = len(lines)
        for i in range(start, start + 10):
            lines.append(f"Record {i}: lantern {i} hangs above door {i * 7 % 13} on pier {i % 5}.")
        messages = [ChatMessage("system", "\n".join(lines)), ChatMessage("user", "Which pier has lantern 3?")]
        tokens = backend.tokenize(backend.render(messages))
        if len(tokens) >= min_tokens:
            return tokens


@pytest.mark.parametrize("flash_prefill", [True, False], ids=["flash-prefill", "plain"])
async def test_cancel_interrupts_a_long_prompt_evaluation(smol_path, flash_prefill, caplog):
    """The abort callback stops llama_decode mid-prompt; the next turn still answers correctly.

    A long cold prompt is evaluated in the flash-attention context by default, so both
    contexts' evaluations are cancelled here.
    """
    spec = ModelSpec("smollm2", smol_path, ModelOptions(n_ctx=2048, n_threads=2, flash_prefill=flash_prefill))
    caplog.set_level(logging.DEBUG, logger="llama.cpp")
    greedy = SamplingParams(max_tokens=4, temperature=0.0)
    reference_backend, backend = LlamaBackend(spec), LlamaBackend(spec)
    await reference_backend.load()
    await backend.load()
    try:
        tokens = long_prompt(backend, 1500)
        full = reference_backend.stream(GenerationRequest(tokens, greedy, "room"))
        reference = await full.text()
        assert full.stats.evaluated_prompt_tokens == len(tokens)
        assert bool(full.stats.prefilled_tokens) == flash_prefill
        full_eval_s = full.stats.ttft_s

        reply = backend.stream(GenerationRequest(tokens, greedy, "room"))
        await asyncio.sleep(full_eval_s / 4)  # inside the prompt evaluation, past its first batch or so
        reply.cancel()
        await reply.text()
        assert reply.stats.finish_reason == "cancelled"
        assert reply.stats.completion_tokens == 0
        assert reply.stats.evaluated_prompt_tokens < len(tokens), "the evaluation was cut short"
        said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "llama.cpp"]
        # ret 2 is llama_decode's answer to the abort callback: the cancel stopped a decode
        # inside its batch, not at the next batch boundary (no timing assert needed for that).
        assert (logging.DEBUG, "llama_decode: failed to decode, ret = 2") in said, "the abort callback stopped it"
        assert all(level < logging.WARNING for level, _ in said), f"a deliberate cancel is no warning: {said}"

        # Another room in between parks the cancelled room's state; then the room comes back.
        other = backend.stream(GenerationRequest(prompt(backend, "Say hello."), greedy, "other"))
        assert (await other.text()).strip()
        again = backend.stream(GenerationRequest(tokens, greedy, "room"))
        assert await again.text() == reference
        assert again.stats.finish_reason != "cancelled"
        kept = reply.stats.evaluated_prompt_tokens
        assert again.stats.evaluated_prompt_tokens <= len(tokens) - kept, "what was evaluated is reused"
    finally:
        await backend.close()
        await reference_backend.close()


async def test_stop_strings_are_honoured(smol):
    request = GenerationRequest(
        prompt(smol, "Write the numbers 1, 2, 3, 4, 5 separated by commas."),
        SamplingParams(max_tokens=40, temperature=0.0, stop=("3",)),
    )
    text = await smol.stream(request).text()
    assert "3" not in text and "4" not in text


async def test_gemma_without_template_uses_builtin_format(gemma_path):
    backend = LlamaBackend(ModelSpec("gemma", gemma_path, ModelOptions(n_ctx=512, n_threads=2)))
    await backend.load()
    try:
        assert backend.template.name == "gemma"
        rendered = backend.render([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")])
        assert rendered.startswith("<bos><start_of_turn>user\nBe brief.")
        assert rendered.endswith("<start_of_turn>model\n")
        reply = backend.stream(GenerationRequest(backend.tokenize(rendered), SamplingParams(max_tokens=8)))
        await reply.text()
        assert reply.stats.completion_tokens >= 1
        tokens = backend.tokenize(rendered)
        assert tokens.count(tokens[0]) == 1, "BOS must not be doubled"
    finally:
        await backend.close()


async def test_reasoning_events_are_split_from_text():
    from engine.reply import Done, ReplyStream

    stream = ReplyStream()
    stream.push(ReasoningChunk("thinking"))
    stream.push(TextChunk("answer"))
    stream.push(Done())
    assert await stream.text() == "answer"
    assert [type(e) async for e in stream.events()][:2] == [ReasoningChunk, TextChunk]
