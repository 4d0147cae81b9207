"""The small interface every model backend implements.

Capabilities are class attributes (``can_stream``), options are one frozen dataclass,
and generation is one streaming call. The engine talks to a backend only through this.
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


@dataclass(frozen=True)
class ModelSpec:
    """A model ready to load: where it is and how to run it."""

    name: str
    path: Path
    n_ctx: int = 2048
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_batch: int = 512
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    flash_attn: bool = False
    flash_prefill: bool = True  # evaluate long cold prompts in a second, flash-attention context
    flash_prefill_min_tokens: int = 128
    chat_format: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    state_cache_mb: int = 512
    state_cache_dir: Path | None = None


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
