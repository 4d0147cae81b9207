"""A streaming reply: iterate it for chunks, or await its whole text.

The producer (a backend worker thread) pushes typed events; consumers iterate
``async for chunk in reply`` to drive throttled edits, or call ``await reply.text()``.
Chunks are cached, so a late or second consumer still sees everything. ``on_done``
hooks run once on the event loop when the stream ends (store the reply, wake the
summarizer) and never on failure or cancel.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from engine.types import Speaker
from errors import HearthError, ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextChunk:
    """Visible reply text."""

    text: str


@dataclass(frozen=True)
class ReasoningChunk:
    """Text inside ``<think>`` blocks: never shown, kept for debugging."""

    text: str


@dataclass(frozen=True)
class GenerationStats:
    """What one generation cost; feeds ``stats`` and the benchmarks."""

    prompt_tokens: int = 0
    evaluated_prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    finish_reason: str = "stop"
    restored_state: bool = False
    prefilled_tokens: int = 0  # of evaluated_prompt_tokens, those evaluated with flash attention
    cut_tokens: int = 0  # last turn's volatile block, taken out of the cells instead of evaluating after it

    @property
    def tokens_per_s(self) -> float:
        gen_time = self.total_s - self.ttft_s
        return self.completion_tokens / gen_time if gen_time > 0 else 0.0


@dataclass(frozen=True)
class Done:
    """The end of a stream."""

    stats: GenerationStats = field(default_factory=GenerationStats)


@dataclass(frozen=True)
class Failed:
    """The producer failed; ``error`` is already a HearthError."""

    error: HearthError


Event = TextChunk | ReasoningChunk | Done | Failed


def push_split(reply: ReplyStream, visible: str, reasoning: str) -> None:
    """Hand a ThinkFilter's (visible, reasoning) pieces over from a worker thread, skipping empty ones."""
    if visible:
        reply.push_threadsafe(TextChunk(visible))
    if reasoning:
        reply.push_threadsafe(ReasoningChunk(reasoning))
DoneHook = Callable[["ReplyStream"], Awaitable[None] | None]


def without_leading_name(text: str, names: tuple[str, ...], *, final: bool) -> tuple[str, bool]:
    """``text`` without a leading ``Name:`` (small models like to label their own line), and whether
    that is decided: not while ``text`` could still grow into one of them, unless ``final``."""
    start = text.lstrip()
    for name in names:
        label = f"{name}:".lower()
        if start.lower().startswith(label):
            return start[len(label) :].lstrip(), True
        if not final and label.startswith(start.lower()):
            return "", False
    return text, True


class ReplyStream:
    """An async iterable of visible text chunks that can also be awaited as a whole."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._events: list[Event] = []
        self._changed = asyncio.Event()
        self._finished = False
        self._cancel = threading.Event()
        self._on_done: list[DoneHook] = []
        self._hooks_done = asyncio.Event()
        self.stats: GenerationStats | None = None
        self.error: HearthError | None = None
        self.speaker: Speaker | None = None  # who writes it, when the room's cast has more than one
        self.leading_names: tuple[str, ...] = ()  # a leading "Name:" the model writes is not shown

    # -- producer side (any thread) -------------------------------------------------

    def push_threadsafe(self, event: Event) -> None:
        """Hand an event over from a worker thread."""
        self._loop.call_soon_threadsafe(self.push, event)

    def push(self, event: Event) -> None:
        """Record an event; call on the event loop."""
        if self._finished:
            return
        self._events.append(event)
        if isinstance(event, Done | Failed):
            self._finished = True
            if isinstance(event, Done):
                self.stats = event.stats
                self._loop.create_task(self._run_hooks())
            else:
                self.error = event.error
                self._hooks_done.set()
        self._changed.set()

    @property
    def cancelled(self) -> bool:
        """Polled by the producer between tokens, and by llama.cpp's abort callback mid-decode."""
        return self._cancel.is_set()

    # -- consumer side ---------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the producer to stop as soon as it can (even mid-prompt); what was produced is kept."""
        self._cancel.set()

    def on_done(self, hook: DoneHook) -> None:
        """Run ``hook(self)`` once, after a successful end."""
        self._on_done.append(hook)

    @property
    def finished(self) -> bool:
        return self._finished

    async def events(self) -> AsyncIterator[Event]:
        """Every event, from the first, including reasoning and the final Done."""
        index = 0
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                if isinstance(event, Failed):
                    raise event.error
                yield event
                if isinstance(event, Done):
                    return
            self._changed.clear()
            if index < len(self._events):
                continue
            await self._changed.wait()

    async def __aiter__(self) -> AsyncIterator[str]:
        pending, decided = "", not self.leading_names
        async for event in self.events():
            if not isinstance(event, TextChunk) or not event.text:
                continue
            if decided:
                yield event.text
                continue
            pending += event.text  # held until it cannot be the start of "Name:"
            shown, decided = without_leading_name(pending, self.leading_names, final=False)
            if decided and shown:
                yield shown
        if not decided:
            shown, _ = without_leading_name(pending, self.leading_names, final=True)
            if shown:
                yield shown

    async def text(self) -> str:
        """The whole visible text, once the stream has ended."""
        async for _ in self.events():
            pass
        return self.partial_text()

    def partial_text(self) -> str:
        """The visible text produced so far (useful after a cancel or failure)."""
        text = "".join(e.text for e in self._events if isinstance(e, TextChunk))
        return without_leading_name(text, self.leading_names, final=True)[0] if self.leading_names else text

    async def settled(self) -> None:
        """Wait until the stream ended and every on_done hook has run."""
        await self._hooks_done.wait()

    async def _run_hooks(self) -> None:
        try:
            for hook in self._on_done:
                try:
                    result = hook(self)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as exc:  # a hook failure must not kill the loop
                    log.exception("reply on_done hook failed: %s", exc)
        finally:
            self._hooks_done.set()

    @classmethod
    def from_text(cls, text: str) -> ReplyStream:
        """A finished stream holding fixed text (command output, greetings)."""
        stream = cls()
        stream.push(TextChunk(text))
        stream.push(Done())
        return stream

    @classmethod
    def failed(cls, error: BaseException) -> ReplyStream:
        stream = cls()
        err = error if isinstance(error, HearthError) else ModelError(str(error), original=error)
        stream.push(Failed(err))
        return stream
