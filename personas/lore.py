"""Lorebooks (world info): entries that enter the prompt when their keywords come up.

Activation is a pure function of (books, recent messages, token counter, budget) and its
output order depends only on those inputs, so identical turns give an identical prompt
prefix and the model's evaluated state can be reused.

This module is hearth's own lorebook model and its activation; converting SillyTavern
World Info and V2/V3 ``character_book`` objects lives in ``personas.st_lore``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from personas.macros import macro_checked

Position = Literal["before_char", "after_char"]
SelectiveLogic = Literal["and_any", "and_all", "not_any", "not_all"]

DEFAULT_SCAN_DEPTH = 4
DEFAULT_TOKEN_BUDGET = 400
DEFAULT_PRIORITY = 10
DEFAULT_ORDER = 100


def _as_key_list(value: Any) -> Any:
    """Some tools write keys as one comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class LoreEntry(BaseModel):
    """One piece of world info and the keywords that bring it into the prompt."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uid: int = 0
    keys: list[str] = Field(default_factory=list)
    secondary_keys: list[str] = Field(default_factory=list)
    selective: bool = False
    selective_logic: SelectiveLogic = "and_any"
    constant: bool = False
    enabled: bool = True
    case_sensitive: bool = False
    match_whole_words: bool = False
    insertion_order: int = Field(default=DEFAULT_ORDER, validation_alias=AliasChoices("insertion_order", "order"))
    priority: int = DEFAULT_PRIORITY
    position: Position = "before_char"
    scan_depth: int | None = Field(default=None, ge=0)
    content: str = ""
    comment: str = ""
    extensions: dict[str, Any] = Field(default_factory=dict)

    @field_validator("keys", "secondary_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        return _as_key_list(value)

    @field_validator("keys", "secondary_keys")
    @classmethod
    def _drop_blank_keys(cls, value: list[str]) -> list[str]:
        return [key for key in value if key.strip()]

    @field_validator("content", mode="before")
    @classmethod
    def _content_newlines(cls, value: Any) -> Any:
        return value.replace("\r\n", "\n") if isinstance(value, str) else value

    @field_validator("content")
    @classmethod
    def _content_macros(cls, value: str) -> str:
        return macro_checked(value)


class Lorebook(BaseModel):
    """A named set of entries with its own scan depth and token budget."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    scan_depth: int = Field(default=DEFAULT_SCAN_DEPTH, ge=0)
    token_budget: int = Field(default=DEFAULT_TOKEN_BUDGET, ge=0)
    recursive_scanning: bool = False
    extensions: dict[str, Any] = Field(default_factory=dict)
    entries: list[LoreEntry] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be empty")
        return value.strip()


@dataclass(frozen=True)
class ActivatedEntry:
    """An entry chosen for this turn, with its cost in the model's tokens."""

    entry: LoreEntry
    tokens: int
    book: str = ""


# ---------------------------------------------------------------------------- activation


REGEX_KEY = re.compile(r"/(.+)/([a-z]*)", re.DOTALL)  # SillyTavern's ``/regex/flags`` keys


def is_regex_key(key: str) -> bool:
    """A ``/regex/flags`` key: matched as a regular expression against every message."""
    return REGEX_KEY.fullmatch(key) is not None


@lru_cache(maxsize=4096)
def _key_pattern(key: str, case_sensitive: bool, whole_words: bool) -> re.Pattern[str]:
    """Compile a key once; ``/regex/flags`` keys are SillyTavern's regex keys."""
    regex = REGEX_KEY.fullmatch(key)
    if regex:
        flags = 0 if case_sensitive and "i" not in regex.group(2) else re.IGNORECASE
        if "s" in regex.group(2):
            flags |= re.DOTALL
        try:
            return re.compile(regex.group(1), flags)
        except re.error:
            pass  # not a valid regex: treat it as literal text, as a user would expect
    body = re.escape(key.strip())
    if whole_words:
        body = rf"(?<!\w){body}(?!\w)"
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


def _matches(key: str, entry: LoreEntry, texts: Sequence[str]) -> bool:
    pattern = _key_pattern(key, entry.case_sensitive, entry.match_whole_words)
    return any(pattern.search(text) for text in texts)


def _triggered(entry: LoreEntry, texts: Sequence[str]) -> bool:
    if not any(_matches(key, entry, texts) for key in entry.keys):
        return False
    if not (entry.selective and entry.secondary_keys):
        return True
    hits = [_matches(key, entry, texts) for key in entry.secondary_keys]
    logic = entry.selective_logic
    if logic == "and_any":
        return any(hits)
    if logic == "and_all":
        return all(hits)
    if logic == "not_any":
        return not any(hits)
    return not all(hits)  # not_all


def activate(
    books: Sequence[Lorebook],
    recent_messages: Sequence[str],
    count_tokens: Callable[[str], int],
    budget: int | None = None,
) -> list[ActivatedEntry]:
    """Entries to insert this turn.

    ``recent_messages`` is oldest first; each entry scans the last ``scan_depth`` of them
    (its own depth, else its book's). Constant entries always qualify, disabled never.
    The budget (default: the largest ``token_budget`` of the books, shared) is filled by
    priority, highest first, then insertion order, highest first; an entry that does
    not fit is skipped, so the lowest priorities drop first.

    Returned order: ``before_char`` entries, then ``after_char``; within each, constant
    entries first (they never change, which keeps the prompt prefix cacheable), then by
    insertion order ascending (higher order sits closer to the chat), then book and
    entry order. The same inputs always give the same list.
    """
    limit = budget if budget is not None else max((book.token_budget for book in books), default=0)
    candidates: list[tuple[int, int, Lorebook, LoreEntry]] = []
    for book_index, book in enumerate(books):
        for entry_index, entry in enumerate(book.entries):
            if not entry.enabled or not entry.content.strip():
                continue
            depth = book.scan_depth if entry.scan_depth is None else entry.scan_depth
            texts = list(recent_messages[-depth:]) if depth > 0 else []
            if entry.constant or _triggered(entry, texts):
                candidates.append((book_index, entry_index, book, entry))

    ranked = sorted(candidates, key=lambda c: (-c[3].priority, -c[3].insertion_order, c[0], c[1]))
    chosen: list[tuple[int, int, ActivatedEntry]] = []
    used = 0
    for book_index, entry_index, book, entry in ranked:
        tokens = count_tokens(entry.content)
        if used + tokens <= limit:
            used += tokens
            chosen.append((book_index, entry_index, ActivatedEntry(entry, tokens, book.name)))

    def placement(item: tuple[int, int, ActivatedEntry]) -> tuple[int, bool, int, int, int]:
        book_index, entry_index, active = item
        entry = active.entry
        return (
            entry.position != "before_char",
            not entry.constant,
            entry.insertion_order,
            book_index,
            entry_index,
        )

    return [active for *_, active in sorted(chosen, key=placement)]


def split_by_position(activated: Sequence[ActivatedEntry]) -> tuple[str, str]:
    """Join activated entries into (lore_before, lore_after) text for ``Persona.render_system``."""
    before = [a.entry.content.strip() for a in activated if a.entry.position == "before_char"]
    after = [a.entry.content.strip() for a in activated if a.entry.position == "after_char"]
    return "\n\n".join(before), "\n\n".join(after)
