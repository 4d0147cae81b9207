"""Memory after repeated model swaps: 10 load/unload cycles of the two bundled models.

Usage: python -m bench.swap [--cycles 10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from pathlib import Path

from bench.common import GEMMA, ROOT, SMOL, emit, require_model
from engine.model_host import ModelHost
from engine.registry import ModelRegistry
from engine.settings import ModelOptions, ModelSettings


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run(cycles: int) -> dict:
    host = ModelHost(ModelRegistry(ModelSettings(models_dir=ROOT / "models", options=ModelOptions(n_ctx=2048))))
    await host.load("smollm2-135m-instruct")
    gc.collect()
    first = rss_mb()
    times = []
    for _ in range(cycles):
        for name in ("gemma-3-270m", "smollm2-135m-instruct"):
            report = await host.load(name)
            times.append(float(report.split("done in ")[1].split(" s")[0]))
        await host.unload()
        await host.load("smollm2-135m-instruct")
    gc.collect()
    after = rss_mb()
    await host.close()
    return {
        "cycles": cycles,
        "rss_first_mb": round(first, 1),
        "rss_after_mb": round(after, 1),
        "rss_ratio": round(after / first, 3),
        "median_swap_s": sorted(times)[len(times) // 2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    require_model(SMOL)
    require_model(GEMMA)
    emit("swap", asyncio.run(run(args.cycles)))


if __name__ == "__main__":
    main()
