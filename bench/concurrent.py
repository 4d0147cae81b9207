"""Many rooms sending a turn at the same moment: one at a time (parallel=1) against batched.

Every room has a ~1,100-token persona prompt (as in ``bench.rooms``) and is warmed once.
Then, in each round, every room sends a turn at once, and each reply is exactly ``--gen``
tokens (EOS is banned in this benchmark's sampling only). Reports, per mode, the median
and p95 time to first token, the median time to the whole reply, and generated tokens
per second over all rooms; the ratios are batched over serial, from the same run.
Also reports, per mode, the warm-up as a cold burst: every room's first prompt at once
(``cold_median_ttft_s``, ``cold_p95_ttft_s``). All modes stay loaded, and each round goes
to every mode in turn (``measure``).
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


Result = tuple[float, float, int]  # (time to first token, time to the whole reply, tokens)


class HearthLoad:
    """hearth's own backend at one ``model.parallel``, loaded once for the whole run."""

    def __init__(self, parallel: int, flash_prefill: bool) -> None:
        options = ModelOptions(n_ctx=N_CTX, parallel=parallel, flash_prefill=flash_prefill)
        self.backend = LlamaBackend(ModelSpec("smollm2", SMOL, options))

    async def open(self) -> None:
        await self.backend.load()
        self.backend.banned_tokens = (self.backend._llm.token_eos(),)

    async def send(self, rooms: int, round_: int, gen: int) -> list[Result]:
        """Every room's turn of ``round_`` at once (round 0: the cold persona prompts, one token)."""
        backend = self.backend
        sampling = SamplingParams(max_tokens=gen, temperature=0.7, seed=1) if round_ else SamplingParams(max_tokens=1)
        prompts = [backend.tokenize(backend.render(turn(room, round_))) for room in range(rooms)]
        started = time.perf_counter()
        streams = [backend.stream(GenerationRequest(p, sampling, f"room-{i}")) for i, p in enumerate(prompts)]
        return list(await asyncio.gather(*(timed(stream, started) for stream in streams)))

    async def close(self) -> None:
        await self.backend.close()


class ServerLoad:
    """The same load against llama-server's ``/completion`` with token prompts."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.client = httpx.AsyncClient(timeout=600)
        self.tokenizer = LlamaBackend(ModelSpec("smollm2", SMOL, ModelOptions(n_ctx=N_CTX)))

    async def open(self) -> None:
        await self.tokenizer.load()

    async def one(self, tokens: list[int], n: int, sent: float) -> Result:
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
        async with self.client.stream("POST", f"{self.url}/completion", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get("content"):
                    first = first or time.perf_counter() - sent
                    produced += 1
        done = time.perf_counter() - sent
        return first or done, done, produced

    async def send(self, rooms: int, round_: int, gen: int) -> list[Result]:
        tokenizer = self.tokenizer
        prompts = [tokenizer.tokenize(tokenizer.render(turn(room, round_))) for room in range(rooms)]
        started = time.perf_counter()
        return list(await asyncio.gather(*(self.one(p, gen if round_ else 1, started) for p in prompts)))

    async def close(self) -> None:
        await self.client.aclose()
        await self.tokenizer.close()


async def measure(loads: dict[str, HearthLoad | ServerLoad], rooms: int, rounds: int, gen: int) -> dict:
    """Each round goes to every mode in turn, so all modes meet the machine in the same state:
    its speed drifts by tens of percent within minutes, which a whole mode after another
    turned into ratios from 1.2 to 1.7 between runs of the same code."""
    cold: dict[str, list[float]] = {}
    for name, load in loads.items():  # warm-up, and a cold burst: every room's persona prompt at once
        cold[name] = [ttft for ttft, _, _ in await load.send(rooms, 0, gen)]
    ttfts: dict[str, list[float]] = {name: [] for name in loads}
    replies: dict[str, list[float]] = {name: [] for name in loads}
    tokens = dict.fromkeys(loads, 0)
    seconds = dict.fromkeys(loads, 0.0)
    for round_ in range(1, rounds + 1):
        for name, load in loads.items():
            started = time.perf_counter()
            results = await load.send(rooms, round_, gen)
            seconds[name] += time.perf_counter() - started
            for ttft, whole, produced in results:
                ttfts[name].append(ttft)
                replies[name].append(whole)
                tokens[name] += produced
    result = {name: summary(ttfts[name], replies[name], tokens[name], seconds[name]) for name in loads}
    for name, load in loads.items():
        if isinstance(load, HearthLoad):
            result[name] |= {"cold_median_ttft_s": median(cold[name]), "cold_p95_ttft_s": p95(cold[name])}
    return result


def ratio(batched: dict, serial: dict, key: str) -> float:
    return round(batched[key] / serial[key], 3) if serial[key] else 0.0


async def run(rooms: int, rounds: int, gen: int, parallel: int, server: str | None, flash_prefill: bool = True) -> dict:
    loads: dict[str, HearthLoad | ServerLoad] = {
        "serial": HearthLoad(1, flash_prefill),
        "batched": HearthLoad(parallel, flash_prefill),
    }
    if server:
        loads["server"] = ServerLoad(server)
    try:
        for load in loads.values():
            await load.open()
        measured = await measure(loads, rooms, rounds, gen)
    finally:
        for load in loads.values():
            await load.close()
    serial, batched = measured["serial"], measured["batched"]
    result = {"rooms": rooms, "rounds": rounds, "gen": gen, "parallel": parallel, **measured}
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
