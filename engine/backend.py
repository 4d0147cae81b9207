"""The small interface every model backend implements.

Capabilities are class attributes (``can_stream``, ``kind``, ``max_concurrent``), options
are one frozen dataclass (``ModelOptions``), and generation is one streaming call. The
engine talks to a backend only through ``Backend``, which lists exactly what it uses:
``engine.model_host`` builds one per model entry (in-process llama.cpp, or an
OpenAI-compatible server), and ``engine.fake_backend`` stands in for policy tests.

``tokenize`` and the counts are synchronous because context assembly needs them inside a
search; a backend whose exact count needs I/O does it only off the event loop (see
``engine.remote_backend``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from engine.chat_template import ChatMessage, ChatTemplate
from engine.gguf_meta import GGUFInfo
from engine.reply import ReplyStream
from engine.sampling import SamplingParams
from engine.settings import ModelOptions


@dataclass(frozen=True)
class ModelSpec:
    """A model ready to load: where it is, how to load it, and its default sampling."""

    name: str
    path: Path
    options: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingParams = field(default_factory=SamplingParams)


CAST_SEPARATOR = "#"  # room key + this + cast member: each character's own cached prompt state


def cache_key(room_key: str, member: str | None = None) -> str:
    """The key a backend keeps a prompt state under: the room, or one character of its cast."""
    return room_key if member is None else f"{room_key}{CAST_SEPARATOR}{member}"


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: the prompt already rendered and tokenized by context assembly."""

    prompt_tokens: Sequence[int]
    sampling: SamplingParams
    room_key: str | None = None
    # [start, end) of the prompt's volatile block (``AssembledPrompt.volatile_span``): a backend
    # that keeps evaluated cells may take it out of them at the room's next turn
    volatile_span: tuple[int, int] | None = None


class Backend(Protocol):
    """A loaded model. ``load``/``close`` bracket its life; nothing happens in ``__init__``."""

    can_stream: ClassVar[bool]
    kind: ClassVar[str]  # "local" | "remote" | "fake": shown by ``model info``
    spec: ModelSpec
    info: GGUFInfo | None  # the GGUF header, where there is a local file
    template: ChatTemplate | None  # how messages become a prompt
    load_seconds: float

    @property
    def max_concurrent(self) -> int:
        """Replies this backend generates at once; the scheduler runs up to this many turns."""
        ...

    @property
    def details(self) -> tuple[str, ...]:
        """Extra lines for ``model info`` and ``stats`` (a server's endpoint and health)."""
        ...

    @property
    def loaded(self) -> bool: ...

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int: ...

    def count_text_tokens(self, text: str) -> int:
        """Tokens of a bare text (lore, a stored message), without BOS or template."""
        ...

    def stream(self, request: GenerationRequest) -> ReplyStream: ...

    def invalidate_room(self, room: str) -> None:
        """Forget what is cached for a room whose prompt prefix changed (a new summary), or whose
        memory lost messages (forget-me, reset, a deleted or edited message)."""
        ...
