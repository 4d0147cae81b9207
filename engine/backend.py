"""The small interface every model backend implements.

Capabilities are class attributes (``can_stream``), options are one frozen dataclass
(``ModelOptions``), and generation is one streaming call. The engine talks to a backend
only through this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from engine.chat_template import ChatMessage
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

    @property
    def n_ctx(self) -> int:
        """The context window; context assembly reads it every turn."""
        return self.options.n_ctx


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: the prompt already rendered and tokenized by context assembly."""

    prompt_tokens: Sequence[int]
    sampling: SamplingParams
    room_key: str | None = None


class Backend(Protocol):
    """A loaded model. ``load``/``close`` bracket its life; nothing happens in ``__init__``."""

    can_stream: ClassVar[bool]
    spec: ModelSpec
    info: GGUFInfo | None

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int: ...

    def stream(self, request: GenerationRequest) -> ReplyStream: ...
