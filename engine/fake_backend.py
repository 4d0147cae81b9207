"""A backend that replays scripted replies, for engine policy tests (no model, no thread).

``enqueue([...])`` queues one reply as its chunks; each ``stream`` call takes the next one
and records its request in ``history``. A reply may wait on a gate (``asyncio.Event``)
so a test can hold it mid-stream, and cancel ends it at the next chunk, as a real backend
does. Tokens are characters: counts are exact and easy to reason about in a test.
Generation tests use the real model; this is for scheduling, commands and policy.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import BUILTIN_FORMATS, ChatMessage, ChatTemplate
from engine.reply import Done, Failed, GenerationStats, ReplyStream, TextChunk
from errors import HearthError, ModelError


@dataclass
class _Script:
    chunks: list[str]
    gate: asyncio.Event | None
    error: HearthError | None


class FakeBackend:
    """Scripted replies; see the module docstring."""

    can_stream: ClassVar[bool] = True
    kind: ClassVar[str] = "fake"
    details: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: ModelSpec | None = None, *, max_concurrent: int = 1) -> None:
        self.spec = spec or ModelSpec("fake", Path("fake.gguf"))
        self.max_concurrent = max_concurrent
        self.info = None
        self.template: ChatTemplate | None = ChatTemplate(BUILTIN_FORMATS["chatml"], name="chatml")
        self.load_seconds = 0.0
        self.history: list[GenerationRequest] = []
        self.invalidated: list[str] = []
        self.active = 0  # replies streaming right now
        self.peak_active = 0  # the most at once: what a concurrency test checks
        self._script: deque[_Script] = deque()
        self._loaded = False

    def enqueue(
        self, chunks: Sequence[str], *, gate: asyncio.Event | None = None, error: HearthError | None = None
    ) -> None:
        """Queue the next reply: its chunks, an optional gate it waits on first, or an error it fails with."""
        self._script.append(_Script(list(chunks), gate, error))

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def load(self) -> None:
        self._loaded = True

    async def close(self) -> None:
        self._loaded = False

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        assert self.template is not None
        return self.template.render(messages, add_generation_prompt)

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.tokenize(self.render(messages)))

    def count_text_tokens(self, text: str) -> int:
        return len(text)

    def invalidate_room(self, room: str) -> None:
        self.invalidated.append(room)

    def stream(self, request: GenerationRequest) -> ReplyStream:
        self.history.append(request)
        reply = ReplyStream()
        empty = _Script([], None, ModelError("FakeBackend: no reply queued"))
        script = self._script.popleft() if self._script else empty
        asyncio.get_running_loop().create_task(self._play(script, request, reply))
        return reply

    async def _play(self, script: _Script, request: GenerationRequest, reply: ReplyStream) -> None:
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        produced, finish = 0, "stop"
        try:
            if script.gate is not None:
                await script.gate.wait()
            if script.error is not None:
                reply.push(Failed(script.error))
                return
            for chunk in script.chunks:
                if reply.cancelled:
                    finish = "cancelled"
                    break
                reply.push(TextChunk(chunk))
                produced += 1
                await asyncio.sleep(0)
            stats = GenerationStats(len(request.prompt_tokens), len(request.prompt_tokens), produced)
            reply.push(Done(GenerationStats(**{**stats.__dict__, "finish_reason": finish})))
        finally:
            self.active -= 1
