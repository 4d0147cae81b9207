"""The one loaded model, and safe swapping between models.

A swap waits for the running generation (or cancels it with ``now``) while the
scheduler holds new turns, frees the old model, loads the new one, and proves it
with a one-token health check. Any failure reloads the previous model, so the bot
never ends up with no model. The scheduler comes in through the ``Pauser`` protocol,
wired by ``bot.py``: the host knows nothing of conversations.

Backends come from a factory chosen per entry (a local GGUF or a server), so a swap
between an in-process model and a remote one is the same drain, check and roll-back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from engine.backend import Backend, GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage
from engine.registry import ModelEntry, ModelRegistry
from engine.sampling import SamplingParams
from errors import HearthError, ModelError, UserError

log = logging.getLogger(__name__)
Progress = Callable[[str], Awaitable[None]]
BackendFactory = Callable[[ModelEntry, ModelSpec], Backend]


def build_backend(entry: ModelEntry, spec: ModelSpec) -> Backend:
    """A server entry gets the OpenAI-compatible backend; a file gets llama.cpp in-process."""
    if entry.remote is not None:
        from engine.remote_backend import RemoteBackend

        return RemoteBackend(spec, entry.remote)
    from engine.llama_backend import LlamaBackend

    return LlamaBackend(spec)


async def _quiet(_: str) -> None:
    return None


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo; None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Pauser(Protocol):
    """What generates on the model (the scheduler): a swap holds it, and may cancel its reply."""

    def paused_turns(self) -> AbstractAsyncContextManager[None]: ...

    def cancel_running(self) -> None: ...


class ModelHost:
    """Owns the current backend; everything that loads or frees a model goes through here."""

    def __init__(
        self, registry: ModelRegistry, pauser: Pauser | None = None, factory: BackendFactory = build_backend
    ) -> None:
        self.registry = registry
        self.factory = factory  # a seam: policy tests pass one that builds a FakeBackend
        self.backend: Backend | None = None
        self.entry: ModelEntry | None = None
        self._swap_lock = asyncio.Lock()
        self._pauser = pauser  # None until wired: nothing generates, so nothing to wait for
        self.on_swap: list[Callable[[], None]] = []
        self.available_memory: Callable[[], int | None] = available_memory_bytes  # a seam for tests

    def use_pauser(self, pauser: Pauser) -> None:
        """Wire what generates on this model (``bot.py`` passes the scheduler)."""
        self._pauser = pauser

    def memory_budget(self) -> int | None:
        """Free RAM plus the current model's weights, which a swap frees first; None: unknown."""
        have = self.available_memory()
        if have is None:
            return None
        return have + (self.backend.info.file_size if self.backend and self.backend.info else 0)

    def memory_problem(self, entry: ModelEntry) -> str | None:
        """Why loading ``entry`` now would not fit in RAM; None when it fits (or RAM is unknown).

        The current model's weights count as available: a swap frees them first.
        """
        budget = self.memory_budget()
        need = self.registry.estimate_bytes(entry, available=budget)
        if budget is None or need <= budget:
            return None
        return (
            f"not enough memory for {entry.name}: needs about {need / 2**20:.0f} MB, "
            f"{budget / 2**20:.0f} MB available"
        )

    @property
    def loaded(self) -> bool:
        return self.backend is not None and self.backend.loaded

    @property
    def max_concurrent(self) -> int:
        """Turns the loaded backend runs at once (1 with none loaded); the scheduler reads it."""
        return max(self.backend.max_concurrent, 1) if self.backend is not None else 1

    def require(self) -> Backend:
        if self.backend is None or not self.backend.loaded:
            raise UserError("no model is loaded; an operator can run: model load NAME")
        return self.backend

    async def load(
        self, name: str, *, now: bool = False, progress: Progress = _quiet, paths: bool = True
    ) -> str:
        """Swap to ``name``; returns a one-line report. Rolls back on any failure.

        ``paths=False`` accepts registered models only (see ``ModelRegistry.resolve``).
        """
        entry = self.registry.resolve(name, paths=paths)
        if entry.remote is None or entry.remote.tokenizer is not None:
            kind = self.registry.info(entry).architecture  # a clear ModelError for a missing or broken file
        else:
            kind = f"server {entry.remote.url}"
        problem = self.memory_problem(entry)
        if problem is not None:
            raise UserError(problem)
        async with self._swap_lock, self._paused(now):
            return await self._swap(entry, kind, progress)

    @contextlib.asynccontextmanager
    async def _paused(self, now: bool) -> AsyncIterator[None]:
        """Nothing generates inside: new turns are held and the running one ended (or cancelled)."""
        if self._pauser is None:
            yield
            return
        if now:
            self._pauser.cancel_running()
        async with self._pauser.paused_turns():
            yield

    async def _swap(self, entry: ModelEntry, architecture: str, progress: Progress) -> str:
        previous = self.entry
        await progress(f"loading {entry.name} ({architecture})…")
        started = time.perf_counter()
        await self._unload()
        try:
            await self._start(entry)
        except HearthError as exc:
            log.warning("loading %s failed: %s", entry.name, exc)
            await self._unload()
            if previous is None:
                raise
            await progress(f"loading {entry.name} failed; restoring {previous.name}…")
            await self._start(previous)
            raise ModelError(f"could not load {entry.name}: {exc}; kept {previous.name}") from exc
        return f"loading… done in {time.perf_counter() - started:.1f} s: {entry.name} is now active"

    async def _start(self, entry: ModelEntry) -> None:
        # The old model is gone by now, so free RAM says how many rooms at once fit (model.parallel).
        spec = self.registry.spec_for(entry, available=self.available_memory())
        configured = self.registry.spec_for(entry).options.parallel
        if spec.options.parallel < configured:
            log.warning(
                "%s: %d rooms at once instead of model.parallel %d: the KV cache for more would not fit in RAM",
                entry.name, spec.options.parallel, configured,
            )
        backend = self.factory(entry, spec)
        try:
            await backend.load()
            await self._health_check(backend)
        except BaseException:
            await backend.close()
            raise
        self.backend, self.entry = backend, entry
        for hook in self.on_swap:
            hook()

    @staticmethod
    async def _health_check(backend: Backend) -> None:
        tokens = backend.tokenize(backend.render([ChatMessage("user", "Hi")]))
        stream = backend.stream(GenerationRequest(tokens, SamplingParams(max_tokens=1, temperature=0.0)))
        await stream.text()
        if stream.stats is None or stream.stats.prompt_tokens == 0:
            raise ModelError(f"model {backend.spec.name} failed its health check")

    async def unload(self) -> str:
        async with self._swap_lock:
            if self.backend is None:
                return "no model is loaded"
            name = self.entry.name if self.entry else "model"
            async with self._paused(False):
                await self._unload()
            return f"unloaded {name}; replies are off until an operator runs: model load NAME"

    async def _unload(self) -> None:
        backend, self.backend, self.entry = self.backend, None, None
        if backend is not None:
            await backend.close()
            for hook in self.on_swap:
                hook()

    async def close(self) -> None:
        await self._unload()
