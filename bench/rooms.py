"""Many rooms taking turns: time to first token, cold and warm, with the state cache on and off.

Compares hearth's backend with raw llama-cpp-python (defaults, and with LlamaRAMCache) on
the same prompts in the same run.
Usage: python -m bench.rooms [--rooms 8] [--turns 3] [--flash-attn on|off] [--flash-prefill on|off]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import SMOL, emit, median, persona_messages, require_model
from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.llama_backend import LlamaBackend
from engine.sampling import SamplingParams
from engine.settings import ModelOptions

N_CTX = 4096
SAMPLING = SamplingParams(max_tokens=4, temperature=0.0)


def conversation(room: int, turn: int) -> list[ChatMessage]:
    messages = persona_messages(room)
    for t in range(turn + 1):
        messages.append(ChatMessage("user", f"Question {t}: what happens next in room {room}?"))
        if t < turn:
            messages.append(ChatMessage("assistant", f"Answer {t} for room {room}."))
    return messages


async def run_hearth(
    rooms: int, turns: int, cache_mb: int, flash_attn: bool = False, flash_prefill: bool = True
) -> dict:
    options = ModelOptions(n_ctx=N_CTX, state_cache_mb=cache_mb, flash_attn=flash_attn, flash_prefill=flash_prefill)
    spec = ModelSpec("smollm2", SMOL, options)
    backend = LlamaBackend(spec)
    await backend.load()
    cold, warm, evaluated = [], [], []
    try:
        for turn in range(turns):
            for room in range(rooms):
                tokens = backend.tokenize(backend.render(conversation(room, turn)))
                reply = backend.stream(GenerationRequest(tokens, SAMPLING, f"room-{room}"))
                await reply.text()
                (cold if turn == 0 else warm).append(reply.stats.ttft_s)
                if turn:
                    evaluated.append(reply.stats.evaluated_prompt_tokens)
    finally:
        await backend.close()
    return {"cold": median(cold), "warm": median(warm), "evaluated": median(evaluated)}


def run_raw(rooms: int, turns: int, ram_cache: bool, cold_only: bool = False) -> dict:
    """Raw llama-cpp-python: defaults (or LlamaRAMCache), same rendered prompts."""
    from llama_cpp import Llama, LlamaRAMCache

    llm = Llama(model_path=str(SMOL), n_ctx=N_CTX, verbose=False)
    if ram_cache:
        llm.set_cache(LlamaRAMCache(capacity_bytes=2 << 30))
    helper = LlamaBackend(ModelSpec("smollm2", SMOL, ModelOptions(n_ctx=N_CTX)))
    asyncio.run(helper.load())
    cold, warm = [], []
    try:
        for turn in range(1 if cold_only else turns):
            for room in range(rooms):
                tokens = helper.tokenize(helper.render(conversation(room, turn)))
                started = time.perf_counter()
                stream = llm.create_completion(tokens, max_tokens=4, temperature=0.0, stream=True)
                next(iter(stream))
                (cold if turn == 0 else warm).append(time.perf_counter() - started)
                for _ in stream:
                    pass
    finally:
        asyncio.run(helper.close())
        llm.close()
    return {"cold": median(cold), "warm": median(warm)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--flash-attn", choices=("on", "off"), default="off", help="hearth's model.flash_attn")
    parser.add_argument("--flash-prefill", choices=("on", "off"), default="on", help="hearth's model.flash_prefill")
    args = parser.parse_args()
    require_model(SMOL)
    options = {"flash_attn": args.flash_attn == "on", "flash_prefill": args.flash_prefill == "on"}
    hearth = asyncio.run(run_hearth(args.rooms, args.turns, cache_mb=1024, **options))
    single = asyncio.run(run_hearth(1, args.turns + 1, cache_mb=1024, **options))
    off = asyncio.run(run_hearth(args.rooms, 2, cache_mb=0, **options))
    raw_cache = run_raw(args.rooms, args.turns, ram_cache=True)
    raw_default = run_raw(args.rooms, 1, ram_cache=False, cold_only=True)
    warm = hearth["warm"]
    emit(
        "rooms",
        {
            "rooms": args.rooms,
            "turns": args.turns,
            "flash_attn": options["flash_attn"],
            "flash_prefill": options["flash_prefill"] and not options["flash_attn"],  # in effect
            "cold_ttft_s": hearth["cold"],
            "warm_ttft_s": warm,
            "single_room_warm_ttft_s": single["warm"],
            "cache_off_warm_ttft_s": off["warm"],
            "warm_prompt_tokens_evaluated": hearth["evaluated"],
            "raw_cache_warm_ttft_s": raw_cache["warm"],
            "raw_default_cold_ttft_s": raw_default["cold"],
            "warm_vs_single_ratio": round(warm / single["warm"], 3) if single["warm"] else None,
            "cache_speedup": round(off["warm"] / warm, 1) if warm else None,
            "warm_vs_raw_cache_ratio": round(warm / raw_cache["warm"], 3) if raw_cache["warm"] else None,
            "cold_vs_raw_default_ratio": round(hearth["cold"] / raw_default["cold"], 3),
        },
    )


if __name__ == "__main__":
    main()
