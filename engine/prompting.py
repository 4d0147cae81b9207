"""Building one turn's prompt: persona, lore, summary and recent turns, and the reply's sampling.

Everything here takes its inputs explicitly: the loaded backend, the store, and a
``RoomTurn`` snapshot read once at the start of the turn, so a reply reads the room's
settings from the database once, however many parts of the prompt depend on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from pydantic import ValidationError

from engine.backend import ModelSpec
from engine.context import (
    AssembledPrompt,
    PromptTokenizer,
    Turn,
    assemble,
    capped,
    fit_message,
    message_token_limit,
    prompt_user,
    within_limit,
)
from engine.recall import Recall, recall_block, recall_budget
from engine.reply import without_leading_name
from engine.sampling import SamplingParams
from memory import MemoryStore, RoomSettings, SearchHit
from personas import ActivatedEntry, Lorebook, LoreEntry, Persona, PersonaLibrary, activate, split_by_position

log = logging.getLogger(__name__)


class PromptBackend(PromptTokenizer, Protocol):
    """What prompt building needs of the loaded model: its window, template and tokenizer."""

    spec: ModelSpec

    def count_text_tokens(self, text: str) -> int: ...


@dataclass(frozen=True)
class RoomTurn:
    """A room's settings and the persona they select, read once for one turn (or one command)."""

    conversation_id: int
    label: str
    settings: RoomSettings
    persona: Persona  # who speaks this turn: the room's persona, or one member of its cast
    cast: tuple[tuple[str, Persona], ...] = ()  # (key, persona) of every member, first member first

    @property
    def is_group(self) -> bool:
        """A cast of two or more: replies carry their speaker, and prompts name the members."""
        return len(self.cast) > 1

    @property
    def members(self) -> dict[str, Persona]:
        return dict(self.cast)

    @property
    def personas(self) -> tuple[Persona, ...]:
        """Every persona that may speak here (the cast, else the one persona)."""
        return tuple(persona for _, persona in self.cast) or (self.persona,)


def room_lorebook(settings: RoomSettings, label: str = "") -> Lorebook:
    """Entries a room manager added to this room with ``lore add`` (kept in ``settings.extra``)."""
    entries = []
    for raw in settings.extra.get("lore", []):
        try:
            entries.append(LoreEntry.model_validate(raw))
        except ValidationError:
            log.warning("skipping an unreadable room lore entry in %s", label or "a room")
    return Lorebook(name="room", entries=entries)


def lore_for(
    books: list[Lorebook], recent: list[str], count_tokens: Callable[[str], int]
) -> tuple[list[ActivatedEntry], list[ActivatedEntry]]:
    """(constant, keyword-activated) lore. Constant lore sits in the stable system prefix;
    keyword lore changes turn by turn, so it goes late in the prompt."""
    if not any(book.entries for book in books):
        return [], []
    active = activate(books, recent, count_tokens)
    return [a for a in active if a.entry.constant], [a for a in active if not a.entry.constant]


def reply_sampling(base: SamplingParams, persona: Persona, settings: RoomSettings) -> SamplingParams:
    """The model's defaults, then the persona's, then the room's overrides, checked against the limits."""
    return base.merged(persona.sampling.as_dict()).merged(settings.sampling).validated()


def with_speaker_stops(sampling: SamplingParams, speakers: Iterable[str]) -> SamplingParams:
    """Small models like to write the next user's line themselves; stop them there."""
    stops = [f"\n{name}:" for name in sorted(speakers)]
    return sampling.merged({"stop": [*sampling.stop, *stops]})


LONG_INPUT_NOTICE = "That message was too long to read whole: I read its beginning and its end."


def read_in_part(text: str, backend: PromptBackend, reserve: int) -> bool:
    """True when a prompt shows only the beginning and end of ``text`` (blocking: may tokenize).

    The same test ``fit_message`` starts with, without its search for the longest cut that fits.
    """
    n_ctx = backend.spec.options.n_ctx
    shown = capped(text, n_ctx)
    return shown != text or not within_limit(shown, message_token_limit(n_ctx, reserve), backend.count_text_tokens)


def _assemble_fitted(
    backend: PromptBackend,
    turns: list[Turn],
    reserve: int,
    recalled: tuple[list[SearchHit], int],
    *,
    system: str,
    summary: str,
    volatile: str,
) -> AssembledPrompt:
    """Each long turn cut to its beginning and end, recalled lines fitted to their budget, then the
    prompt assembled (blocking: tokenizes)."""
    n_ctx = backend.spec.options.n_ctx
    limit = message_token_limit(n_ctx, reserve)
    fitted = [Turn(t.role, t.speaker, fit_message(t.text, limit, backend.count_text_tokens)) for t in turns]
    hits, recall_tokens = recalled
    budget = recall_budget(recall_tokens, n_ctx - reserve)
    block = recall_block(hits, budget, backend.count_text_tokens)
    volatile = "\n\n".join(part for part in (block, volatile) if part)
    # The recall budget is held back whether or not this turn recalls anything, so the recent turns
    # in view do not change with it: a window that lost its oldest turn whenever a block came and got
    # it back when it went would re-evaluate the whole history on both turns.
    # In a window too small for that, the held-back tokens go before the summary or lore would.
    unused = max(budget - (backend.count_text_tokens(block) if block else 0), 0)
    for held in (unused, 0) if unused else (0,):
        prompt = assemble(
            backend, system=system, turns=fitted, n_ctx=n_ctx, reserve=reserve + held, summary=summary,
            volatile=volatile,
        )
        if not prompt.dropped and not prompt.truncated_newest:
            break
    prompt = replace(prompt, budget=n_ctx - reserve)
    if fitted and fitted[-1] != turns[-1]:
        prompt = replace(prompt, truncated_newest=True)
    return prompt


GROUP_NUDGE = "[Write the next reply only as {{char}}.]"  # SillyTavern's group nudge, in the volatile tail


def group_system(system: str, turn: RoomTurn) -> str:
    """The speaker's system text plus the cast, in the stable prefix: the list changes only when
    the cast does, so it never costs a re-evaluation from one turn to the next."""
    if not turn.is_group:
        return system
    names = ", ".join(persona.name for _, persona in turn.cast)
    return f"{system}\n\nThis is a group chat with several characters: {names}."


def group_turns_named(turns: list[Turn], turn: RoomTurn) -> list[Turn]:
    """In a group every character's line carries its name, so each speaker's prompt holds the same
    history and a character can tell its own lines from the others'."""
    if not turn.is_group:
        return turns
    return [Turn(t.role, t.speaker, f"{t.speaker}: {t.text}") if t.role == "assistant" else t for t in turns]


def clean_reply(text: str, persona_name: str) -> str:
    """Drop a leading "Name:" the model sometimes writes, and surrounding blank space: as the reply
    stream shows it (``ReplyStream.leading_names``), so what is stored is what users saw."""
    return without_leading_name(text, (persona_name,), final=True)[0].strip()


class PromptBuilder:
    """Fits a room's memory, persona and lore into the loaded model's window."""

    def __init__(
        self, store: MemoryStore, personas: PersonaLibrary, recall_tokens: int = 0, recall: Recall | None = None
    ) -> None:
        self.store = store
        self.personas = personas
        self.recall_tokens = recall_tokens  # 0: no recall
        self.recall = recall or Recall(store)  # full text only, unless given one with an embedder

    def lorebooks(self, turn: RoomTurn) -> list[Lorebook]:
        """The persona's lorebooks, then the room's own entries."""
        return [*self.personas.lorebooks_for(turn.persona), room_lorebook(turn.settings, turn.label)]

    async def build(self, backend: PromptBackend, turn: RoomTurn, last_user: str, reserve: int) -> AssembledPrompt:
        """The prompt for ``turn``, leaving ``reserve`` tokens of the window for the reply."""
        persona = turn.persona
        summary = await self.store.summary(turn.conversation_id)
        after = summary.covers_through_id if summary else None
        stored = await self.store.messages(turn.conversation_id, after_id=after)
        n_ctx = backend.spec.options.n_ctx
        turns = [Turn(m.role, m.author_name, capped(m.text, n_ctx)) for m in stored if m.role in ("user", "assistant")]
        user = prompt_user(turns)  # stable in a group, so the evaluated prefix stays reusable
        opener = turn.cast[0][1] if turn.is_group else persona  # one greeting, the same in every member's prompt
        greeting = opener.render_greeting(user)
        if greeting and summary is None:
            turns.insert(0, Turn("assistant", opener.name, greeting))
        turns = group_turns_named(turns, turn)
        constant, keyed = lore_for(self.lorebooks(turn), [t.text for t in turns], backend.count_text_tokens)
        lore_before, lore_after = split_by_position(constant)
        volatile = "\n\n".join(
            part
            for part in (
                "\n\n".join(persona.render(a.entry.content, last_user).strip() for a in keyed),
                persona.render_post_history(last_user),
                persona.render(GROUP_NUDGE, last_user) if turn.is_group else "",
            )
            if part
        )
        hits = await self.recall.hits(turn.conversation_id, stored) if self.recall_tokens > 0 else []
        return await asyncio.to_thread(  # counting may be a server round trip (engine.remote_tokens)
            _assemble_fitted,
            backend,
            turns,
            reserve,
            (hits, self.recall_tokens),
            system=group_system(persona.render_system(user, lore_before, lore_after), turn),
            summary=summary.text if summary else "",
            volatile=volatile,
        )
