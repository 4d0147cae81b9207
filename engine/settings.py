"""Typed settings the engine runs on. ``config.py`` builds them from validated YAML.

Nothing below ``bot.py`` reads YAML or the environment; the engine gets these values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.sampling import SamplingParams


@dataclass(frozen=True)
class RemoteEndpoint:
    """An OpenAI-compatible server that generates for a model entry (``endpoint:`` in the config)."""

    url: str  # the base URL, up to and including /v1
    api_key: str | None = field(default=None, repr=False)  # never printed, never logged
    model: str | None = None  # the name on the server; None: the server's only model
    tokenizer: Path | None = None  # a local GGUF read vocab-only, for exact counts without the server
    max_concurrent: int = 1  # rooms generating at once; the server batches them


@dataclass(frozen=True)
class ConfiguredModel:
    """A model named in the config, with per-model overrides of the defaults.

    Either ``path`` (a local GGUF) or ``remote`` (a server) is set, never both.
    """

    name: str
    path: Path | None
    n_ctx: int | None = None
    chat_format: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    remote: RemoteEndpoint | None = None


# With model.parallel > 1 the llama_cpp.Llama context only tokenizes; the batch context holds the rooms.
BATCHED_TOKENIZER_CTX = 256


@dataclass(frozen=True)
class ModelOptions:
    """How a model is loaded: the one place these per-load knobs are named.

    config.py builds it from ``model.*`` in one call, the registry applies per-model
    overrides to it with ``dataclasses.replace``, and ``ModelSpec`` carries it whole to
    the backend, so a new option is added here and read where it is used, nowhere else.
    """

    n_ctx: int = 2048
    n_threads: int | None = None  # None: every core
    n_threads_batch: int | None = None  # None: as n_threads
    n_batch: int = 512
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    flash_attn: bool = False
    flash_prefill: bool = True  # evaluate long cold prompts in a second, flash-attention context
    flash_prefill_min_tokens: int = 128
    chat_format: str | None = None  # None: the GGUF's own template, else a built-in guess
    state_cache_mb: int = 512
    state_cache_dir: Path | None = None
    state_cache_disk_mb: int = 2048  # the disk folder's budget; the oldest states go first
    # Rooms generating at once in one context (engine.batch_decoder); 1: the single path. A spec
    # carries the count to load with; config.py's ``model.parallel`` (default 4) is the most, and
    # ``ModelRegistry.spec_for`` lowers it to what fits in free RAM.
    parallel: int = 1


@dataclass(frozen=True)
class ModelSettings:
    """Which models exist and the options every one of them loads with (unless overridden)."""

    default: str = "smollm2-135m-instruct"
    models_dir: Path = Path("models")
    options: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    models: tuple[ConfiguredModel, ...] = ()


@dataclass(frozen=True)
class MemorySettings:
    """When and how older turns are folded into the rolling summary."""

    summarize_at: float = 0.75  # share of the history budget that triggers a compaction
    keep_recent_turns: int = 6  # always kept verbatim
    summary_max_tokens: int = 200
    recall_tokens: int = 150  # old lines recalled into each prompt, at most; 0 turns recall off
    recall_scope: str = "room"  # room | channel (the room and its threads) | platform
    embedding_model: str = "all-minilm-l6-v2"  # the bundled embedder, a GGUF path or name, or "off"


@dataclass(frozen=True)
class LimitSettings:
    """Token buckets that keep one user or one room from taking all of the bot's time.

    A value of 0 turns that limit off. Operators are never limited.
    """

    user_messages_per_minute: float = 20.0
    user_burst: int = 8
    room_replies_per_minute: float = 30.0


@dataclass(frozen=True)
class EngineSettings:
    default_persona: str = "assistant"
    persona_dirs: tuple[Path, ...] = ()
    user_persona_dir: Path = Path("data/personas")
    max_queue: int = 32
    generation_timeout_s: float = 180.0
    persona_models: bool = True  # swap to a persona's preferred model at its room's turn
    model: ModelSettings = field(default_factory=ModelSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
