"""``model list|info|load|unload``: the catalog and safe hot-swap, for every platform."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.commands.core import Command, CommandContext, CommandResult, Right
from engine.registry import ModelEntry, ModelRegistry, describe_remote
from errors import HearthError

if TYPE_CHECKING:
    from engine.conversation import Conversation


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MB"


def _params(count: int) -> str:
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def model_table(registry: ModelRegistry, active: str | None) -> str:
    """A readable table of every known model; reads only GGUF headers."""
    header = ("", "name", "arch", "params", "quant", "ctx", "template", "size", "needs RAM")
    rows = [header]
    for entry in registry.entries():
        marker = "*" if entry.name == active else ""
        if entry.remote is not None:
            ctx = str(registry.spec_for(entry).options.n_ctx)
            rows.append((marker, entry.name, "server", "-", "-", ctx, "-", entry.remote.url, "-"))
            continue
        if not entry.present:
            rows.append((marker, entry.name, "-", "-", "-", "-", "-", "not pulled", "-"))
            continue
        try:
            info = registry.info(entry)
        except HearthError as exc:
            rows.append((marker, entry.name, "broken", "-", "-", "-", "-", str(exc)[:40], "-"))
            continue
        rows.append(
            (
                marker,
                entry.name,
                info.architecture,
                _params(info.parameter_count),
                info.file_type,
                str(info.context_length or "?"),
                "yes" if info.has_chat_template else f"no ({entry.chat_format or 'chatml'})",
                _mb(info.file_size),
                _mb(registry.estimate_bytes(entry)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def model_details(registry: ModelRegistry, entry: ModelEntry, parallel: int | None = None) -> str:
    """``model info``; ``parallel``: the rooms at once it has (loaded) or would have (free RAM)."""
    if entry.remote is not None:
        return describe_remote(registry, entry)
    info = registry.info(entry)
    options = registry.spec_for(entry).options
    configured = options.parallel
    parallel = parallel or configured
    template = "from GGUF" if info.has_chat_template else f"none; using {options.chat_format or 'chatml'}"
    lines = [
        f"name: {entry.name}",
        f"file: {entry.path} ({_mb(info.file_size)})",
        f"architecture: {info.architecture}, {_params(info.parameter_count)} parameters, {info.file_type}",
        f"context: trained {info.context_length or '?'}, configured n_ctx {options.n_ctx}"
        + (f" for each of {parallel} rooms at once" if parallel > 1 else ", one room at a time")
        + (f" (model.parallel {configured}; more would not fit in free RAM)" if parallel < configured else ""),
        f"chat template: {template}",
        f"license: {info.license or 'unknown'}",
        f"estimated RAM: {_mb(registry.estimate_bytes(entry, parallel=parallel))}",
    ]
    return "\n".join(lines)


def commands(conv: Conversation) -> list[Command]:
    host = conv.host

    async def list_models(ctx: CommandContext, args: list[str]) -> CommandResult:
        table = model_table(host.registry, host.entry.name if host.entry else None)
        table += "".join(f"\n{line}" for line in (host.backend.details[:1] if host.backend else ()))
        return CommandResult(table, table=True)

    async def info(ctx: CommandContext, args: list[str]) -> str:
        if args:
            entry = host.registry.resolve(args[0], paths=ctx.author.on_host)
        elif host.entry is not None:
            entry = host.entry
        else:
            return "no model is loaded"
        backend = host.backend if host.entry == entry else None  # the loaded one, if it is this
        if backend is not None:
            parallel = backend.max_concurrent
        else:
            parallel = host.registry.spec_for(entry, available=host.memory_budget()).options.parallel
        text = model_details(host.registry, entry, parallel)
        if backend is not None:
            template = backend.template.name if backend.template else "none"
            text += f"\nloaded in {backend.load_seconds:.2f} s; template format: {template}"
            text += "".join(f"\n{line}" for line in backend.details)
        return text

    async def load(ctx: CommandContext, args: list[str]) -> CommandResult:
        now = "--now" in args
        names = [a for a in args if a != "--now"]
        if len(names) != 1:
            return CommandResult("usage: model load NAME [--now]", ok=False, ephemeral=True)
        report = await host.load(names[0], now=now, progress=ctx.report, paths=ctx.author.on_host)
        return CommandResult(report, ephemeral=True)

    async def unload(ctx: CommandContext, args: list[str]) -> str:
        return await host.unload()

    return [
        Command(("model", "list"), list_models, "list the models hearth can load"),
        Command(("model", "info"), info, "details of the active (or named) model", "[NAME]", max_args=1),
        Command(
            ("model", "load"),
            load,
            "swap to another model (waits for the current reply; --now cancels it)",
            "NAME [--now]",
            right=Right.OPERATOR,
            min_args=1,
            max_args=2,
        ),
        Command(("model", "unload"), unload, "free the model's memory", right=Right.OPERATOR, max_args=0),
    ]
