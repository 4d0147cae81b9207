"""A room whose memory changed loses every evaluated state, resident ones too, on the real model.

After forget-me, a reset or a deleted message, cells computed with the removed text in view
must not serve the room again, nor be parked to RAM or disk later. Counts are checked, not times.
"""

from __future__ import annotations

from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.llama_backend import LlamaBackend
from engine.reply import TextChunk
from engine.sampling import SamplingParams
from engine.settings import ModelOptions

SHORT = SamplingParams(temperature=0.0, max_tokens=4)


async def loaded(path, parallel: int, tmp_path) -> LlamaBackend:
    options = ModelOptions(n_ctx=1024, n_threads=2, parallel=parallel, state_cache_dir=tmp_path / "states")
    backend = LlamaBackend(ModelSpec("smollm2", path, options))
    await backend.load()
    return backend


def prompt(backend: LlamaBackend, text: str) -> list[int]:
    messages = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", text)]
    return backend.tokenize(backend.render(messages))


async def test_the_resident_room_is_evaluated_again_after_invalidation(smol_path, tmp_path):
    backend = await loaded(smol_path, 1, tmp_path)
    try:
        tokens = prompt(backend, "My secret word is lighthouse. What is yours?")
        await backend.stream(GenerationRequest(tokens, SHORT, "room")).text()
        warm = backend.stream(GenerationRequest(tokens, SHORT, "room"))
        await warm.text()
        backend.invalidate_room("room")
        again = backend.stream(GenerationRequest(tokens, SHORT, "room"))
        await again.text()
    finally:
        await backend.close()
    assert warm.stats.evaluated_prompt_tokens <= 1
    assert again.stats.evaluated_prompt_tokens == len(tokens) and not again.stats.restored_state
    assert not list((tmp_path / "states").glob("*.state")), "the closing flush had nothing of the room to write"


async def test_batched_invalidation_takes_effect_while_other_rooms_stream(smol_path, tmp_path):
    backend = await loaded(smol_path, 2, tmp_path)
    try:
        backend.banned_tokens = (backend._llm.token_eos(),)
        forgotten = prompt(backend, "My secret word is lighthouse. What is yours?")
        await backend.stream(GenerationRequest(forgotten, SHORT, "room-b")).text()
        long_reply = backend.stream(
            GenerationRequest(prompt(backend, "Tell me a long story."), SamplingParams(max_tokens=64), "room-a")
        )
        events = long_reply.events()
        assert isinstance(await anext(events), TextChunk)  # room-a is streaming
        backend.invalidate_room("room-b")
        again = backend.stream(GenerationRequest(forgotten, SHORT, "room-b"))
        await again.text()
        assert not long_reply.finished, "room-b's turn ran inside room-a's batch, after the invalidation"
        async for _ in events:
            pass
    finally:
        await backend.close()
    assert again.stats.evaluated_prompt_tokens == len(forgotten) and not again.stats.restored_state
    assert long_reply.stats.completion_tokens == 64
