"""Per-room KV states: restored when rooms interleave, bounded, spilled to disk, model-checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.llama_backend import LlamaBackend
from engine.sampling import SamplingParams
from engine.settings import ModelOptions
from engine.state_cache import RoomState, StateCache

LORE = "The realm has three rivers that run north, and its kings are wise and patient. " * 12


def state(n: int, size: int) -> RoomState:
    return RoomState(tuple(range(n)), b"x" * size)


def test_lru_is_bounded_by_bytes_and_spills(tmp_path: Path):
    cache = StateCache(max_bytes=2500, model_id="m1", disk_dir=tmp_path)
    cache.put("a", state(10, 1000))
    cache.put("b", state(10, 1000))
    cache.get("a")  # a is now the most recent
    cache.put("c", state(10, 1000))
    assert cache.ram_bytes <= 2500
    assert "b" in cache  # evicted from RAM, but on disk
    assert cache.get("b").data == b"x" * 1000


def test_disk_state_of_another_model_is_ignored(tmp_path: Path):
    StateCache(10_000, "model-A", tmp_path).put("room", state(5, 100))
    writer = StateCache(10_000, "model-A", tmp_path)
    writer.put("room", state(5, 100))
    writer.flush()
    assert StateCache(10_000, "model-A", tmp_path).get("room").tokens == tuple(range(5))
    assert StateCache(10_000, "model-B", tmp_path).get("room") is None


def test_invalidate_forgets_ram_and_disk(tmp_path: Path):
    cache = StateCache(10_000, "m", tmp_path)
    cache.put("room", state(5, 100))
    cache.flush()
    cache.invalidate("room")
    assert cache.get("room") is None
    assert StateCache(10_000, "m", tmp_path).get("room") is None


def test_disk_folder_keeps_to_its_budget_dropping_the_oldest(tmp_path: Path):
    import os

    cache = StateCache(max_bytes=0, model_id="m", disk_dir=tmp_path, max_disk_bytes=2500)
    for age, room in enumerate(("old", "mid", "new")):
        before = set(tmp_path.rglob("*.state"))
        cache.put(room, state(10, 1000))  # nothing fits in RAM: each goes straight to disk
        (written,) = set(tmp_path.rglob("*.state")) - before
        os.utime(written, (1000 + age, 1000 + age))  # file times as if written a second apart
    assert cache.get("old") is None, "the state written longest ago went first"
    assert cache.get("mid") is not None and cache.get("new") is not None


def test_invalidate_drops_the_cast_members_states_too(tmp_path: Path):
    cache = StateCache(10_000, "m", tmp_path)
    for key in ("room", "room#ember", "room#bram", "roomier#ember"):
        cache.put(key, state(5, 100))
    cache.invalidate("room")
    assert [key for key in ("room", "room#ember", "room#bram", "roomier#ember") if key in cache] == ["roomier#ember"]


def room_prompt(backend: LlamaBackend, room: str, turns: list[str]) -> list[int]:
    messages = [ChatMessage("system", f"You narrate for room {room}. {LORE}")]
    messages += [ChatMessage("user", t) for t in turns]
    return backend.tokenize(backend.render(messages))


@pytest.fixture
async def smol(smol_path, tmp_path):
    options = ModelOptions(n_ctx=1024, n_threads=2, state_cache_mb=64, state_cache_dir=tmp_path)
    backend = LlamaBackend(ModelSpec("smollm2", smol_path, options))
    await backend.load()
    yield backend
    await backend.close()


async def generate(backend: LlamaBackend, room: str, tokens: list[int]):
    reply = backend.stream(GenerationRequest(tokens, SamplingParams(max_tokens=2), room))
    await reply.text()
    return reply.stats


async def test_interleaved_rooms_restore_their_state(smol):
    cold = {room: await generate(smol, room, room_prompt(smol, room, ["hello"])) for room in ("A", "B")}
    assert all(s.evaluated_prompt_tokens > 150 for s in cold.values())
    warm = await generate(smol, "A", room_prompt(smol, "A", ["hello", "and then?"]))
    assert warm.restored_state
    assert warm.evaluated_prompt_tokens < 20, "only the new turn is evaluated after a restore"


async def test_cache_off_re_evaluates(smol_path):
    backend = LlamaBackend(ModelSpec("smollm2", smol_path, ModelOptions(n_ctx=1024, n_threads=2, state_cache_mb=0)))
    await backend.load()
    try:
        for room in ("A", "B"):
            await generate(backend, room, room_prompt(backend, room, ["hello"]))
        again = await generate(backend, "A", room_prompt(backend, "A", ["hello", "and then?"]))
        assert not again.restored_state
        assert again.evaluated_prompt_tokens > 150
    finally:
        await backend.close()


async def test_states_survive_a_restart(smol_path, tmp_path):
    spec = ModelSpec("smollm2", smol_path, ModelOptions(n_ctx=1024, n_threads=2, state_cache_dir=tmp_path / "states"))
    first = LlamaBackend(spec)
    await first.load()
    await generate(first, "A", room_prompt(first, "A", ["hello"]))
    await first.close()  # parks and flushes the resident state to disk
    second = LlamaBackend(spec)
    await second.load()
    try:
        warm = await generate(second, "A", room_prompt(second, "A", ["hello", "more"]))
        assert warm.restored_state and warm.evaluated_prompt_tokens < 20
    finally:
        await second.close()


async def test_restored_states_answer_exactly_as_if_never_parked(smol_path):
    """Rooms taking turns (park, restore, buffers reused) reply byte for byte like rooms in a row."""
    greedy = SamplingParams(max_tokens=6, temperature=0.0)
    turns = ["hello", "what is in the north?", "and the south?"]

    async def replies(order: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
        options = ModelOptions(n_ctx=1024, n_threads=2, state_cache_mb=64)
        backend = LlamaBackend(ModelSpec("smollm2", smol_path, options))
        await backend.load()
        try:
            out = {}
            for room, turn in order:
                reply = backend.stream(GenerationRequest(room_prompt(backend, room, turns[: turn + 1]), greedy, room))
                out[room, turn] = await reply.text()
                assert reply.stats.restored_state == (order[0][0] != order[1][0] and turn > 0)
            return out
        finally:
            await backend.close()

    in_a_row = await replies([(room, turn) for room in "AB" for turn in range(3)])
    interleaved = await replies([(room, turn) for turn in range(3) for room in "AB"])
    assert interleaved == in_a_row
