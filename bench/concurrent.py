"""Many rooms sending a turn at the same moment: one at a time (parallel=1) against batched.

Every room has a ~1,100-token persona prompt (as in ``bench.rooms``) and is warmed once.
Then, in each round, every room sends a turn at once, and each reply is exactly ``--gen``
tokens (EOS is banned in this benchmark's sampling only). Reports, per mode, the median
and p95 time to first token, the median time to the whole reply, and generated tokens
per second over all rooms; the ratios are batched over serial, from the same run.
Also reports, per mode, the warm-up as a cold burst: every room's first prompt at once
(``cold_median_ttft_s``, ``cold_p95_ttft_s``).
Usage: python -m bench.concurrent [--rooms 8] [--rounds 3] [--gen 48] [--parallel N] [--server URL]
       [--flash-prefill on|off]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.common import SMOL, emit, median, persona_messages, require_model
from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.llama_backend import LlamaBackend
from engine.reply import ReplyStream
from engine.sampling import SamplingParams
from engine.settings import ModelOptions

N_CTX = 1536  # per sequence: the persona prompt, a turn and the reply


def turn(room: int, round_: int) -> list[ChatMessage]:
    return [*persona_messages(room), ChatMessage("user", f"Round {round_}: what happens next in room {room}?")]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[int(0.95 * (len(ordered) - 1))], 4) if ordered else 0.0


def summary(ttfts: list[float], replies: list[float], tokens: int, seconds: float) -> dict:
    return {
        "median_ttft_s": median(ttfts),
        "p95_ttft_s": p95(ttfts),
        "median_reply_s": median(replies),
        "agg_tok_s": round(tokens / seconds, 2) if seconds else 0.0,
    }


async def timed(reply: ReplyStream, sent: float) -> tuple[float, float, int]:
    """(time to first token, time to the whole reply, tokens) of one reply, as its room sees them."""
    first = 0.0
    async for _ in reply:
        first = first or time.perf_counter() - sent
    await reply.text()
    done = time.perf_counter() - sent
    return first or done, done, reply.stats.completion_tokens if reply.stats else 0


async def run_hearth(rooms: int, rounds: int, gen: int, parallel: int, flash_prefill: bool = True) -> dict:
    options = ModelOptions(n_ctx=N_CTX, parallel=parallel, flash_prefill=flash_prefill)
    backend = LlamaBackend(ModelSpec("smollm2", SMOL, options))
    await backend.load()
    backend.banned_tokens = (backend._llm.token_eos(),)
    sampling = SamplingParams(max_tokens=gen, temperature=0.7, seed=1)
    ttfts: list[float] = []
    replies: list[float] = []
    tokens, seconds = 0, 0.0
    try:
        # Warm-up, and a cold burst: every room's persona prompt at once, one token each.
        started = time.perf_counter()
        cold = [
            backend.stream(
                GenerationRequest(
                    backend.tokenize(backend.render(turn(room, 0))), SamplingParams(max_tokens=1), f"room-{room}"
                )
            )
            for room in range(rooms)
        ]
        cold_ttfts = [ttft for ttft, _, _ in await asyncio.gather(*(timed(reply, started) for reply in cold))]
        for round_ in range(1, rounds + 1):
            prompts = [backend.tokenize(backend.render(turn(room, round_))) for room in range(rooms)]
            started = time.perf_counter()
            streams = [backend.stream(GenerationRequest(p, sampling, f"room-{i}")) for i, p in enumerate(prompts)]
            results = await asyncio.gather(*(timed(stream, started) for stream in streams))
            seconds += time.perf_counter() - started
            for ttft, whole, produced in results:
                ttfts.append(ttft)
                replies.append(whole)
                tokens += produced
    finally:
        await backend.close()
    return summary(ttfts, replies, tokens, seconds) | {
        "cold_median_ttft_s": median(cold_ttfts),
        "cold_p95_ttft_s": p95(cold_ttfts),
    }


async def run_server(url: str, rooms: int, rounds: int, gen: int) -> dict:
    """The same load against llama-server's ``/completion`` with token prompts."""
    import httpx

    tokenizer = LlamaBackend(ModelSpec("smollm2", SMOL, ModelOptions(n_ctx=N_CTX)))
    await tokenizer.load()
    try:
        prompts = [[tokenizer.tokenize(tokenizer.render(turn(r, n))) for r in range(rooms)] for n in range(rounds + 1)]
    finally:
        await tokenizer.close()

    async def one(client: httpx.AsyncClient, tokens: list[int], n: int, sent: float) -> tuple[float, float, int]:
        body = {
            "prompt": tokens,
            "n_predict": n,
            "ignore_eos": n > 1,
            "stream": True,
            "cache_prompt": True,
            "temperature": 0.7,
            "seed": 1,
        }
        first, produced = 0.0, 0
        async with client.stream("POST", f"{url.rstrip('/')}/completion", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get("content"):
                    first = first or time.perf_counter() - sent
                    produced += 1
        done = time.perf_counter() - sent
        return first or done, done, produced

    ttfts: list[float] = []
    replies: list[float] = []
    tokens, seconds = 0, 0.0
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(one(client, p, 1, time.perf_counter()) for p in prompts[0]))
        for round_ in range(1, rounds + 1):
            started = time.perf_counter()
            results = await asyncio.gather(*(one(client, p, gen, started) for p in prompts[round_]))
            seconds += time.perf_counter() - started
            for ttft, whole, produced in results:
                ttfts.append(ttft)
                replies.append(whole)
                tokens += produced
    return summary(ttfts, replies, tokens, seconds)


def ratio(batched: dict, serial: dict, key: str) -> float:
    return round(batched[key] / serial[key], 3) if serial[key] else 0.0


async def run(rooms: int, rounds: int, gen: int, parallel: int, server: str | None, flash_prefill: bool = True) -> dict:
    serial = await run_hearth(rooms, rounds, gen, 1, flash_prefill)
    batched = await run_hearth(rooms, rounds, gen, parallel, flash_prefill)
    result = {"rooms": rooms, "rounds": rounds, "gen": gen, "parallel": parallel, "serial": serial, "batched": batched}
    if server:
        result["server"] = await run_server(server, rooms, rounds, gen)
    result |= {
        "agg_ratio": ratio(batched, serial, "agg_tok_s"),
        "p95_ttft_ratio": ratio(batched, serial, "p95_ttft_s"),
        "median_reply_ratio": ratio(batched, serial, "median_reply_s"),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gen", type=int, default=48)
    parser.add_argument("--parallel", type=int, default=None, help="sequences when batched (default: --rooms)")
    parser.add_argument("--server", default=None, help="an OpenAI-compatible llama-server to run the same load against")
    parser.add_argument("--flash-prefill", choices=("on", "off"), default="on", help="hearth's model.flash_prefill")
    args = parser.parse_args()
    require_model(SMOL)
    flash = args.flash_prefill == "on"
    result = asyncio.run(run(args.rooms, args.rounds, args.gen, args.parallel or args.rooms, args.server, flash))
    emit("concurrent", result | {"flash_prefill": flash})


if __name__ == "__main__":
    main()
