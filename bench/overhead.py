"""Streaming through hearth's engine path versus raw llama-cpp-python, same prompt and sampling.

Usage: python -m bench.overhead [--tokens 200] [--parallel N]
(``--parallel N``: hearth streams through the batched decode loop of ``model.parallel`` N.)
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import SMOL, emit, require_model
from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.llama_backend import LlamaBackend
from engine.sampling import SamplingParams
from engine.settings import ModelOptions

PROMPT = [
    ChatMessage("system", "You are a storyteller."),
    ChatMessage("user", "Tell a long story about a lighthouse keeper and a storm, with many details."),
]


async def engine_rate(max_tokens: int, runs: int, parallel: int = 1) -> tuple[float, list[int]]:
    options = ModelOptions(n_ctx=2048, state_cache_mb=0, parallel=parallel)
    backend = LlamaBackend(ModelSpec("smollm2", SMOL, options))
    await backend.load()
    tokens = backend.tokenize(backend.render(PROMPT))
    rates = []
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=42)
    try:
        for _ in range(runs):
            reply = backend.stream(GenerationRequest(tokens, sampling, None))
            first = None
            count = 0
            async for _chunk in reply:  # consume on the event loop, as an adapter does
                first = first or time.perf_counter()
                count += 1
            end = time.perf_counter()
            rates.append(reply.stats.completion_tokens / (end - first) if first and end > first else 0.0)
    finally:
        await backend.close()
    return max(rates), tokens


def raw_rate(tokens: list[int], max_tokens: int, runs: int) -> float:
    import os

    from llama_cpp import Llama

    threads = os.cpu_count() or 1
    llm = Llama(model_path=str(SMOL), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                flash_attn=ModelOptions().flash_attn, last_n_tokens_size=64, verbose=False)
    rates = []
    s = SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=42)
    try:
        for _ in range(runs):
            llm.reset()
            stream = llm.create_completion(
                tokens, max_tokens=max_tokens, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                min_p=s.min_p, repeat_penalty=s.repeat_penalty, seed=s.seed, stream=True,
            )
            first = None
            count = 0
            for _chunk in stream:
                first = first or time.perf_counter()
                count += 1
            end = time.perf_counter()
            rates.append(count / (end - first) if first and end > first else 0.0)
    finally:
        llm.close()
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    require_model(SMOL)
    engine, tokens = asyncio.run(engine_rate(args.tokens, args.runs, args.parallel))
    raw = raw_rate(tokens, args.tokens, args.runs)
    emit("overhead", {"parallel": args.parallel, "engine_tok_s": round(engine, 1), "raw_tok_s": round(raw, 1),
                      "ratio": round(engine / raw, 3) if raw else None})


if __name__ == "__main__":
    main()
