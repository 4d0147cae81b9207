"""Cold prompts evaluated with flash attention and served by the plain context (real models)."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest
from llama_cpp import Llama

from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.flash_prefill import FlashPrefill
from engine.llama_backend import LlamaBackend
from engine.sampling import SamplingParams
from engine.seq_state import read_sequence_state, write_sequence_state
from engine.settings import ModelOptions

TEXT = " ".join(
    f"Entry {i}: the lighthouse keeper of the northern isle wrote that the tide turned at dusk, "
    "and the gulls came in early from the grey water." for i in range(12)
)


def last_logits(llm: Llama) -> np.ndarray:
    pointer = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).copy()


def clear(llm: Llama) -> None:
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), True)
    llm.n_tokens = 0


@pytest.mark.parametrize("model", ["smol_path", "gemma_path"])
def test_converted_state_gives_the_logits_of_a_plain_evaluation(model, request):
    """Both bundled models: SmolLM2 (one KV cache) and gemma-3 (two: sliding window and full)."""
    llm = Llama(model_path=str(request.getfixturevalue(model)), n_ctx=1024, n_threads=2, verbose=False)
    prefill = FlashPrefill(llm, llama_cpp.ggml_abort_callback())
    try:
        tokens = llm.tokenize(TEXT.encode(), add_bos=True)
        assert 300 < len(tokens) < 1000
        llm.eval(tokens)
        plain = last_logits(llm)
        flash_layout = None

        state = prefill.evaluate(tokens[:-1])
        assert state is not None and prefill.last_evaluated == len(tokens) - 1
        clear(llm)
        assert write_sequence_state(llm._ctx.ctx, state)
        llm.input_ids[: len(tokens) - 1] = tokens[:-1]
        llm.n_tokens = len(tokens) - 1
        llm.eval(tokens[-1:])
        served = last_logits(llm)

        assert served.argmax() == plain.argmax()
        top = set(np.argsort(plain)[-10:])
        assert len(top & set(np.argsort(served)[-10:])) >= 8
        assert np.corrcoef(plain, served)[0, 1] > 0.995  # only flash attention's rounding differs

        # Why the rewrite exists: llama.cpp refuses the state in the flash-attention layout.
        flash_layout = read_sequence_state(prefill._ctx.ctx)
        clear(llm)
        assert not write_sequence_state(llm._ctx.ctx, flash_layout)
    finally:
        prefill.close()
        llm.close()


def test_prefill_resumes_its_own_prefix(smol_path):
    llm = Llama(model_path=str(smol_path), n_ctx=1024, n_threads=2, verbose=False)
    prefill = FlashPrefill(llm, llama_cpp.ggml_abort_callback())
    try:
        tokens = llm.tokenize(TEXT.encode(), add_bos=True)
        assert prefill.pending(tokens) == len(tokens)
        assert prefill.evaluate(tokens[:200]) is not None
        assert prefill.pending(tokens) == len(tokens) - 200
        assert prefill.evaluate(tokens) is not None
        assert prefill.last_evaluated == len(tokens) - 200
    finally:
        prefill.close()
        llm.close()


def conversation(turns: int) -> list[ChatMessage]:
    messages = [ChatMessage("system", "You are the narrator of a seaside story. " + TEXT)]
    for t in range(turns):
        messages.append(ChatMessage("user", f"What happens at dusk on day {t}?"))
        if t < turns - 1:
            messages.append(ChatMessage("assistant", f"The tide turns on day {t}."))
    return messages


@pytest.mark.parametrize("flash_prefill", [True, False])
async def test_cold_turns_are_prefilled_and_warm_turns_are_not(smol_path, flash_prefill):
    spec = ModelSpec("smollm2", smol_path, ModelOptions(n_ctx=1024, n_threads=2, flash_prefill=flash_prefill))
    backend = LlamaBackend(spec)
    greedy = SamplingParams(max_tokens=6, temperature=0.0)
    await backend.load()
    try:
        cold_tokens = backend.tokenize(backend.render(conversation(1)))
        cold = backend.stream(GenerationRequest(cold_tokens, greedy, "room"))
        assert (await cold.text()).strip()
        assert cold.stats.evaluated_prompt_tokens == len(cold_tokens)
        assert cold.stats.prefilled_tokens == (len(cold_tokens) - 1 if flash_prefill else 0)

        warm_tokens = backend.tokenize(backend.render(conversation(2)))
        warm = backend.stream(GenerationRequest(warm_tokens, greedy, "room"))
        assert (await warm.text()).strip()
        assert 0 < warm.stats.evaluated_prompt_tokens < 40, "the warm turn reuses the prefix"
        assert warm.stats.prefilled_tokens == 0, "a short warm stretch stays in the plain context"
    finally:
        await backend.close()


async def test_a_long_message_is_prefilled_only_when_it_outweighs_the_history(smol_path):
    """Flash attention is slower for a batch much shorter than the cache it attends to."""
    backend = LlamaBackend(ModelSpec("smollm2", smol_path, ModelOptions(n_ctx=2048, n_threads=2)))
    greedy = SamplingParams(max_tokens=2, temperature=0.0)
    await backend.load()
    try:
        history = conversation(1)
        first = backend.stream(GenerationRequest(backend.tokenize(backend.render(history)), greedy, "room"))
        await first.text()
        assert first.stats.prefilled_tokens > 300

        history += [ChatMessage("assistant", "The tide turns."), ChatMessage("user", TEXT + TEXT)]
        tokens = backend.tokenize(backend.render(history))
        long = backend.stream(GenerationRequest(tokens, greedy, "room"))
        await long.text()
        assert long.stats.prefilled_tokens > first.stats.prompt_tokens, "longer than the history: flash"

        history += [ChatMessage("assistant", "Yes."), ChatMessage("user", TEXT[:700])]
        tokens = backend.tokenize(backend.render(history))
        medium = backend.stream(GenerationRequest(tokens, greedy, "room"))
        await medium.text()
        assert 128 <= medium.stats.evaluated_prompt_tokens < long.stats.prompt_tokens
        assert medium.stats.prefilled_tokens == 0, "shorter than the history before it: plain"
    finally:
        await backend.close()
