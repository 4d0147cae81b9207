"""hearth's remote backend versus direct streaming requests to the same server, in one run.

Starts ``python -m llama_cpp.server`` with SmolLM2 on loopback (or uses ``--url``), then:

- throughput: the same prompt and seeded sampling streamed through ``RemoteBackend`` and
  by a plain httpx SSE request; tokens/s after the first token, best of ``--runs``;
- warm TTFT: a ~1,000-token persona prefix is evaluated once, then each turn adds a new
  user line to it, so the server reuses the prefix. hearth's TTFT counts everything a
  turn does before the first token (rendering, the exact count through the server's
  tokenize endpoint, the request); the direct one is the request alone, same prefix.

Usage: python -m bench.remote [--tokens 128] [--runs 3] [--url http://host:port/v1]
Prints one JSON line: engine_tok_s, direct_tok_s, ratio, warm_ttft_s, direct_warm_ttft_s.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench.common import SMOL, emit, median, persona_messages, require_model
from bench.llama_server import LlamaServer
from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.remote_backend import RemoteBackend
from engine.sampling import SamplingParams
from engine.settings import ModelOptions, RemoteEndpoint

PROMPT = [
    ChatMessage("system", "You are a storyteller."),
    ChatMessage("user", "Tell a long story about a lighthouse keeper and a storm, with many details."),
]
QUESTIONS = ["Who keeps the silver key?", "When does the market open?", "What does the ferryman take?",
             "Where do the storms come from?", "What runs through Myr?", "Who argues about the coast?"]


def sampling(max_tokens: int) -> SamplingParams:
    # min_tokens is not portable: a high max_tokens and a story prompt keep both sides long
    return SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=42)


async def engine_stream(backend: RemoteBackend, messages: list[ChatMessage], params: SamplingParams) -> tuple:
    """(ttft, tokens, seconds after the first token) through hearth: render, exact count, stream."""
    started = time.perf_counter()
    tokens = await asyncio.to_thread(backend.tokenize, backend.render(messages))  # as prompt assembly does
    reply = backend.stream(GenerationRequest(tokens, params, None))
    first = 0.0
    async for _chunk in reply:
        first = first or time.perf_counter()
    end = time.perf_counter()
    return first - started, reply.stats.completion_tokens if reply.stats else 0, end - first


async def direct_stream(client: httpx.AsyncClient, prompt: str, params: SamplingParams, stop: list[str]) -> tuple:
    """(ttft, tokens, seconds after the first token) with one plain streaming request."""
    body: dict[str, Any] = {
        "prompt": prompt, "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
        "top_k": params.top_k, "min_p": params.min_p, "repeat_penalty": params.repeat_penalty, "seed": params.seed,
        "stop": stop, "stream": True, "cache_prompt": True,
    }
    started = time.perf_counter()
    first, count = 0.0, 0
    async with aconnect_sse(client, "POST", "/completions", json=body) as source:
        async for event in source.aiter_sse():
            if event.data.strip() == "[DONE]":
                break
            if event.json()["choices"][0].get("text"):
                first = first or time.perf_counter()
                count += 1
    end = time.perf_counter()
    return first - started, count, end - first


def rate(result: tuple) -> float:
    _, count, seconds = result
    return count / seconds if seconds > 0 else 0.0


async def measure(url: str, max_tokens: int, runs: int) -> dict:
    spec = ModelSpec("remote", Path(), ModelOptions(n_ctx=2048))
    backend = RemoteBackend(spec, RemoteEndpoint(url, max_concurrent=1))
    await backend.load()
    assert backend.template is not None
    stop = list(backend.template.stop)
    params = sampling(max_tokens)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            engine_rates, direct_rates = [], []
            prompt = backend.render(PROMPT)
            await direct_stream(client, prompt, params, stop)  # warm-up: load pages, fill caches
            for _ in range(runs):  # interleaved, so drift on a shared machine hits both sides alike
                engine_rates.append(rate(await engine_stream(backend, PROMPT, params)))
                direct_rates.append(rate(await direct_stream(client, prompt, params, stop)))
            engine_ttft, direct_ttft = [], []
            persona = persona_messages(0)
            short = sampling(16)
            await direct_stream(client, backend.render([*persona, ChatMessage("user", "Hello.")]), short, stop)
            for index in range(runs * 2):
                question = [*persona, ChatMessage("user", QUESTIONS[index % len(QUESTIONS)])]
                if index % 2 == 0:
                    engine_ttft.append((await engine_stream(backend, question, short))[0])
                else:
                    direct_ttft.append((await direct_stream(client, backend.render(question), short, stop))[0])
    finally:
        await backend.close()
    engine_tok_s, direct_tok_s = max(engine_rates), max(direct_rates)
    warm, direct_warm = median(engine_ttft), median(direct_ttft)
    return {
        "engine_tok_s": round(engine_tok_s, 1),
        "direct_tok_s": round(direct_tok_s, 1),
        "ratio": round(engine_tok_s / direct_tok_s, 3) if direct_tok_s else 0.0,
        "warm_ttft_s": warm,
        "direct_warm_ttft_s": direct_warm,
        "warm_ttft_ratio": round(warm / direct_warm, 3) if direct_warm else 0.0,
        "counts": backend.details[2].removeprefix("token counts: "),
        "max_tokens": max_tokens,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", help="an already running server's /v1 URL (default: start llama_cpp.server)")
    args = parser.parse_args()
    if args.url:
        emit("remote", asyncio.run(measure(args.url, args.tokens, args.runs)))
        return
    with tempfile.TemporaryDirectory() as logs:
        server = LlamaServer(require_model(SMOL), Path(logs)).start()
        try:
            emit("remote", asyncio.run(measure(server.url, args.tokens, args.runs)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
