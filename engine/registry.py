"""Which models exist: files in models_dir, models named in config, and the pullable catalog.

Listing reads only GGUF headers, so ``model list`` is instant and never loads weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from engine.backend import ModelSpec
from engine.catalog import ALIASES, CATALOG
from engine.gguf_meta import GGUFInfo, read_gguf_info
from engine.settings import BATCHED_TOKENIZER_CTX, ModelSettings, RemoteEndpoint
from errors import ModelError

# llama.cpp's working buffers beyond weights and KV cache, measured loosely on CPU.
LOAD_OVERHEAD_BYTES = 150 * 1024 * 1024
# More than one sequence only while the estimate takes at most this share of the free RAM.
PARALLEL_RAM_SHARE = 0.75


@dataclass(frozen=True)
class ModelEntry:
    """A model hearth can load (or could, once pulled)."""

    name: str
    path: Path
    chat_format: str | None = None
    n_ctx: int | None = None
    sampling: dict | None = None
    source: str = "file"  # "file" | "config" | "catalog"
    remote: RemoteEndpoint | None = None  # set: a server generates; ``path`` is its optional tokenizer

    @property
    def present(self) -> bool:
        """A server counts as present: whether it answers is the health check's job."""
        return self.remote is not None or self.path.is_file()


class ModelRegistry:
    """Resolves a name or a path to a ModelEntry, and a ModelEntry to a ModelSpec."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self._info_cache: dict[tuple[Path, float, int], GGUFInfo] = {}

    def entries(self) -> list[ModelEntry]:
        found: dict[str, ModelEntry] = {}
        models_dir = self.settings.models_dir
        for model in CATALOG.values():
            found[model.name] = ModelEntry(
                model.name, models_dir / model.filename, model.chat_format, source="catalog"
            )
        by_path = {e.path.resolve(): name for name, e in found.items()}
        if models_dir.is_dir():
            for path in sorted(models_dir.glob("*.gguf")):
                if path.resolve() not in by_path:
                    found[path.stem.lower()] = ModelEntry(path.stem.lower(), path)
        for configured in self.settings.models:
            remote = configured.remote
            found[configured.name.lower()] = ModelEntry(
                configured.name.lower(),
                configured.path or (remote.tokenizer if remote and remote.tokenizer else Path()),
                configured.chat_format,
                configured.n_ctx,
                configured.sampling,
                source="config",
                remote=remote,
            )
        return sorted(found.values(), key=lambda e: e.name)

    def resolve(self, name_or_path: str, *, paths: bool = True) -> ModelEntry:
        """A registered name (case-insensitive), an alias, or (with ``paths``) a path to a .gguf file.

        Without ``paths`` (anyone who does not sit at the bot's machine), only registered
        models and regular files inside ``models_dir`` are accepted, and every refusal reads
        the same whether or not a file exists, so chat cannot probe the host's files.
        """
        wanted = ALIASES.get(name_or_path.lower(), name_or_path.lower())
        for entry in self.entries():
            if entry.name == wanted:
                if paths or self._may_open(entry):
                    return entry
                break
        if paths:
            path = Path(name_or_path).expanduser()
            if path.suffix == ".gguf" or os.sep in name_or_path:
                return ModelEntry(path.stem.lower(), path)
        names = ", ".join(e.name for e in self.entries() if paths or self._may_open(e))
        raise ModelError(f"unknown model {name_or_path!r}; available: {names}")

    def _may_open(self, entry: ModelEntry) -> bool:
        """Configured and catalog models, or a regular file that really lies inside ``models_dir``
        (no symlink out of it, no FIFO or device)."""
        if entry.source == "config":
            return True  # the operator named it in the config file
        folder = self.settings.models_dir.resolve()
        try:
            target = entry.path.resolve(strict=entry.source != "catalog")
        except (OSError, RuntimeError):
            return False
        if not target.is_relative_to(folder):
            return False
        return (entry.source == "catalog" and not target.exists()) or target.is_file()

    def info(self, entry: ModelEntry) -> GGUFInfo:
        """Header metadata, cached per file version (a server's: its ``tokenizer:`` GGUF)."""
        if entry.remote is not None and entry.remote.tokenizer is None:
            raise ModelError(f"model {entry.name} is served by {entry.remote.url}; it has no local file")
        if not entry.path.is_file():
            hint = f"; run: python bot.py models pull {entry.name}" if entry.source == "catalog" else ""
            raise ModelError(f"model file {entry.path} does not exist{hint}")
        stat = entry.path.stat()
        key = (entry.path.resolve(), stat.st_mtime, stat.st_size)
        if key not in self._info_cache:
            self._info_cache[key] = read_gguf_info(entry.path)
        return self._info_cache[key]

    def check_files(self, entry: ModelEntry) -> None:
        """Read the headers of what ``entry`` needs locally (a server entry: its tokenizer, if any)."""
        if entry.remote is None or entry.remote.tokenizer is not None:
            self.info(entry)

    def spec_for(self, entry: ModelEntry, available: int | None = None) -> ModelSpec:
        """The configured options, with this model's own overrides (the one place they apply).

        ``available``: free RAM in bytes. ``model.parallel`` is the most rooms at once; with RAM
        known, it becomes as many as fit (``fitted_parallel``), so a big model still loads.
        """
        options = self.settings.options
        if entry.n_ctx is not None:
            options = replace(options, n_ctx=entry.n_ctx)
        if entry.chat_format is not None:
            options = replace(options, chat_format=entry.chat_format)
        spec = ModelSpec(entry.name, entry.path, options, self.settings.sampling.merged(entry.sampling))
        if available is None or entry.remote is not None or options.parallel == 1:
            return spec
        return replace(spec, options=replace(options, parallel=self.fitted_parallel(entry, available)))

    def fitted_parallel(self, entry: ModelEntry, available: int) -> int:
        """The most sequences, up to ``model.parallel``, whose estimate leaves RAM to spare.

        A second sequence is worth having only with room left for the state cache and the rest
        of the bot, so more than one must fit in ``PARALLEL_RAM_SHARE`` of ``available``; one
        sequence is the plain path, whose fit ``ModelHost.memory_problem`` judges as before.
        """
        for parallel in range(self.spec_for(entry).options.parallel, 1, -1):
            if self.estimate_bytes(entry, parallel=parallel) <= available * PARALLEL_RAM_SHARE:
                return parallel
        return 1

    def estimate_bytes(self, entry: ModelEntry, *, parallel: int | None = None, available: int | None = None) -> int:
        """Weights + KV cache at the configured n_ctx + llama.cpp's working buffers.

        The flash-attention prefill context has a KV cache of its own (and shares the weights).
        With ``parallel`` > 1 the batch context holds ``n_ctx`` cells for every sequence, the
        main context only tokenizes (``BATCHED_TOKENIZER_CTX``), and the prefill context holds
        one sequence of ``n_ctx``. ``parallel`` counts that many sequences instead of the
        configured ones; ``available`` counts as many as would be loaded with that much free RAM.
        """
        if entry.remote is not None:
            return 0  # the server holds the weights; a vocab-only tokenizer is a few MB
        info = self.info(entry)
        options = self.spec_for(entry, available).options
        if parallel is not None:
            options = replace(options, parallel=parallel)
        prefill = 1 if options.flash_prefill and not options.flash_attn else 0
        if options.parallel > 1:
            sequences = options.parallel + prefill
            kv = info.kv_cache_bytes(BATCHED_TOKENIZER_CTX) + sequences * info.kv_cache_bytes(options.n_ctx)
        else:
            kv = (1 + prefill) * info.kv_cache_bytes(options.n_ctx)
        return info.file_size + kv + LOAD_OVERHEAD_BYTES

    def default_entry(self) -> ModelEntry:
        return self.resolve(self.settings.default)

    def with_default(self, name: str) -> ModelRegistry:
        return ModelRegistry(replace(self.settings, default=name))


def describe_remote(registry: ModelRegistry, entry: ModelEntry) -> str:
    """``model info`` for a server entry: where it is and how its tokens are counted (no request made)."""
    remote = entry.remote
    assert remote is not None
    options = registry.spec_for(entry).options
    if remote.tokenizer is not None:
        counting, template = f"exact, local tokenizer {remote.tokenizer}", f"from {remote.tokenizer.name}"
    else:
        counting = "the server's tokenize endpoint if it has one, else an estimate"
        template = options.chat_format or "chatml"
    lines = [
        f"name: {entry.name}",
        f"endpoint: {remote.url}, model {remote.model or 'the server default'}",
        f"context: configured n_ctx {options.n_ctx}; up to {remote.max_concurrent} replies at once",
        f"chat template: {template}",
        f"token counts: {counting}",
        f"api key: {'set' if remote.api_key else 'none'}",
    ]
    return "\n".join(lines)
