"""Many rooms taking turns: time to first token, cold and warm, with the state cache on and off.

Compares hearth's backend with raw llama-cpp-python (defaults, and with LlamaRAMCache) on
the same prompts in the same run.
Usage: python -m bench.rooms [--rooms 8] [--turns 3] [--flash-attn on|off] [--flash-prefill on|off] [--cast N]

``restart_ttft_s`` is the first turn of a fresh backend that finds the room's state in the disk
cache (``model.state_cache_dir``). ``--cast N`` adds a group chat: N characters, each with its
own ~1,000-token card, take turns answering in one room, each from its own cached state
(``room#character``); ``cast_warm_ratio`` is their warm TTFT over one character's in the
same conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

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


def cast_conversation(speaker: int, cast: int, turn: int, *, asked: bool = True) -> list[ChatMessage]:
    """Character ``speaker``'s prompt at ``turn`` of a room where ``cast`` characters answer in turn:
    its own card, the member list, then the shared history with every line named, and the nudge
    (as engine.prompting builds it). ``asked=False``: before question ``turn`` arrives (a warm-up)."""
    names = [f"Character{index}" for index in range(cast)]
    system = persona_messages(speaker)[0].content + f"\n\nThis is a group chat with: {', '.join(names)}."
    messages = [ChatMessage("system", system)]
    for t in range(turn + 1):
        if t < turn or asked:
            messages.append(ChatMessage("user", f"Alice: Question {t}: what happens next in the tavern?"))
        if t < turn:
            messages.append(ChatMessage("assistant", f"{names[t % cast]}: Answer {t} from the tavern."))
    messages.append(ChatMessage("system", f"[Write the next reply only as {names[speaker]}.]"))
    return messages


async def run_cast(cast: int, turns: int, warm_idle: bool = True) -> float:
    """Median warm TTFT in one room where ``cast`` characters answer in turn (round robin), once
    each character has spoken; ``cast=1`` is the same conversation with one character.

    ``warm_idle`` does what the engine does between turns (engine.cast_warmup): after each reply,
    every other character's prompt is evaluated into its state, untimed, before the next question.
    """
    options = ModelOptions(n_ctx=N_CTX, state_cache_mb=1024)
    backend = LlamaBackend(ModelSpec("smollm2", SMOL, options))
    await backend.load()
    warm = []
    try:
        for turn in range(cast + turns):
            speaker = turn % cast
            tokens = backend.tokenize(backend.render(cast_conversation(speaker, cast, turn)))
            key = "room" if cast == 1 else f"room#{speaker}"
            reply = backend.stream(GenerationRequest(tokens, SAMPLING, key))
            await reply.text()
            if turn >= cast:
                warm.append(reply.stats.ttft_s)
            for other in range(cast) if warm_idle and cast > 1 else ():
                if other != speaker:
                    idle = backend.tokenize(backend.render(cast_conversation(other, cast, turn + 1, asked=False)))
                    await backend.stream(GenerationRequest(idle, SAMPLING, f"room#{other}")).text()
    finally:
        await backend.close()
    return median(warm)


async def run_restart(turns: int) -> dict:
    """The first turn after a restart: one backend talks and closes (spilling its state to disk),
    a fresh one answers the room's next turn from the disk cache."""
    with tempfile.TemporaryDirectory() as folder:
        options = ModelOptions(n_ctx=N_CTX, state_cache_mb=1024, state_cache_dir=Path(folder))
        ttfts = []
        for turn in range(turns + 1):
            backend = LlamaBackend(ModelSpec("smollm2", SMOL, options))
            await backend.load()
            try:
                tokens = backend.tokenize(backend.render(conversation(0, turn)))
                reply = backend.stream(GenerationRequest(tokens, SAMPLING, "room-0"))
                await reply.text()
                ttfts.append(reply.stats.ttft_s)
            finally:
                await backend.close()
    return {"restart": median(ttfts[1:])}


async def run_hearth(
    rooms: int, turns: int, cache_mb: int, flash_attn: bool = False, flash_prefill: bool = True, parallel: int = 1
) -> dict:
    options = ModelOptions(
        n_ctx=N_CTX, state_cache_mb=cache_mb, flash_attn=flash_attn, flash_prefill=flash_prefill, parallel=parallel
    )
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
    parser.add_argument("--cast", type=int, default=0, help="also measure N characters taking turns in one room")
    parser.add_argument("--parallel", type=int, default=1, help="also measure the batched path (model.parallel N)")
    args = parser.parse_args()
    require_model(SMOL)
    cast: dict = {}
    if args.cast > 1:
        one = asyncio.run(run_cast(1, args.turns * args.cast))
        many = asyncio.run(run_cast(args.cast, args.turns * args.cast))
        cold_members = asyncio.run(run_cast(args.cast, args.turns * args.cast, warm_idle=False))
        cast = {
            "cast": args.cast,
            "cast_warm_ttft_s": many,
            "cast_single_character_warm_ttft_s": one,
            "cast_warm_ratio": round(many / one, 3) if one else None,
            "cast_no_idle_warmup_ttft_s": cold_members,  # without engine.cast_warmup between turns
        }
    restart = asyncio.run(run_restart(args.turns))
    options = {"flash_attn": args.flash_attn == "on", "flash_prefill": args.flash_prefill == "on"}
    hearth = asyncio.run(run_hearth(args.rooms, args.turns, cache_mb=1024, **options))
    single = asyncio.run(run_hearth(1, args.turns + 1, cache_mb=1024, **options))
    off = asyncio.run(run_hearth(args.rooms, 2, cache_mb=0, **options))
    batched: dict = {}
    if args.parallel > 1:  # the same rooms taking turns one at a time, through the batched path
        many = asyncio.run(run_hearth(args.rooms, args.turns, cache_mb=1024, parallel=args.parallel, **options))
        batched = {
            "parallel": args.parallel,
            "parallel_cold_ttft_s": many["cold"],
            "parallel_warm_ttft_s": many["warm"],
            "parallel_warm_ratio": round(many["warm"] / hearth["warm"], 3) if hearth["warm"] else None,
        }
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
            "restart_ttft_s": restart["restart"],
            "restart_vs_warm_ratio": round(restart["restart"] / warm, 3) if warm else None,
            **cast,
            **batched,
        },
    )


if __name__ == "__main__":
    main()
