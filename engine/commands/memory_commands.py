"""``memory show|search|reset|forget-me|export|summarize``: what the bot remembers of a room."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from engine.commands.core import Command, CommandContext, CommandResult, Right
from memory import SearchHit

if TYPE_CHECKING:
    from engine.conversation import Conversation

SEARCH_HITS = 8
HIT_CHARS = 160


def hit_line(hit: SearchHit) -> str:
    """``score  date  speaker: text``, the text on one line and trimmed."""
    text = " ".join(hit.text.split())
    if len(text) > HIT_CHARS:
        text = text[: HIT_CHARS - 1] + "…"
    return f"{hit.score:.2f}  {hit.created_at:%Y-%m-%d %H:%M}  {hit.speaker}: {text}"


async def index_line(conv: Conversation, conversation_id: int) -> str:
    """How much of the room recall can search, and with which embedder."""
    recall = conv.prompts.recall
    if not recall.model:
        return "recall index: full text only (memory.embedding_model is off or could not load)"
    stats = await recall.vectors.stats(conversation_id, recall.model)
    return (
        f"recall index: {stats.messages} messages in full text, {stats.vectors} with vectors;"
        f" embedding model {recall.model}; scope {recall.settings.recall_scope}"
    )


def commands(conv: Conversation) -> list[Command]:
    async def show(ctx: CommandContext, args: list[str]) -> str:
        room = await conv.room(ctx.room)
        summary = await conv.store.summary(room.conversation_id)
        turns = await conv.store.count_messages(room.conversation_id)
        lines = [f"stored turns: {turns}"]
        if summary is None:
            lines.append("summary: (none yet)")
        else:
            lines.append(f"summary{' (stale, rebuilding)' if summary.stale else ''}: {summary.text}")
        backend = conv.host.backend
        if room.last_prompt is not None and backend is not None:
            prompt = room.last_prompt
            lines.append(
                f"context: {prompt.token_count} of {prompt.budget} prompt tokens used (n_ctx "
                f"{backend.spec.options.n_ctx}); {prompt.turns_included} of {prompt.turns_available} turns in view"
            )
        lines.append(await index_line(conv, room.conversation_id))
        turn = await conv.room_turn(ctx.room)
        if turn.is_group:  # the summary and recall hold every character's lines, with their names
            lines.append(f"cast: {', '.join(persona.name for persona in turn.personas)}")
        return "\n".join(lines)

    async def search(ctx: CommandContext, args: list[str]) -> str:
        """What recall would find in this room (and only this room) for the query."""
        room = await conv.room(ctx.room)
        query = " ".join(args)
        hits = await conv.prompts.recall.search(room.conversation_id, query, SEARCH_HITS, browse=True)
        if not hits:
            return f"nothing in this room's memory matches {query[:80]!r}"
        return "\n".join(hit_line(hit) for hit in hits)

    async def reset(ctx: CommandContext, args: list[str]) -> str:
        room = await conv.room(ctx.room)
        removed = await conv.store.reset(room.conversation_id)
        room.last_prompt = None
        conv.forget_cached(room)
        return f"forgot this room: {removed} messages and its summary removed"

    async def forget_me(ctx: CommandContext, args: list[str]) -> str:
        room = await conv.room(ctx.room)
        removed = await conv.store.forget_author(room.conversation_id, ctx.author.id)
        conv.forget_cached(room)
        if await conv.store.summary(room.conversation_id) is not None:
            await conv.schedule_summary(room)
        return f"deleted {removed} of your messages here; the summary is being rebuilt without them"

    async def export(ctx: CommandContext, args: list[str]) -> CommandResult:
        room = await conv.room(ctx.room)
        data = await conv.store.export(room.conversation_id)
        return CommandResult(json.dumps(data, indent=2, ensure_ascii=False), ephemeral=True)

    async def summarize(ctx: CommandContext, args: list[str]) -> str:
        room = await conv.room(ctx.room)
        changed = await conv.summaries.compact_now(room.conversation_id, room.last_prompt)
        summary = await conv.store.summary(room.conversation_id)
        if not changed or summary is None:
            return "nothing to summarize yet (the newest turns are always kept word for word)"
        return f"summary updated: {summary.text}"

    return [
        Command(("memory", "show"), show, "the summary, stored turns, context use and recall index", max_args=0),
        Command(
            ("memory", "search"), search, "what this room's memory holds about QUERY, best first", "QUERY", min_args=1
        ),
        Command(("memory", "reset"), reset, "forget this room", right=Right.ROOM_MANAGER, max_args=0),
        Command(("reset",), reset, "forget this room (same as memory reset)", right=Right.ROOM_MANAGER, max_args=0),
        Command(("memory", "forget-me"), forget_me, "delete your own messages in this room", max_args=0),
        Command(("memory", "export"), export, "this room's memory as JSON", max_args=0),
        Command(("memory", "summarize"), summarize, "compact the history now", right=Right.ROOM_MANAGER, max_args=0),
    ]
