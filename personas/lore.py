"""Lorebooks (world info): entries that enter the prompt when their keywords come up.

Activation is a pure function of (books, recent messages, token counter, budget) and its
output order depends only on those inputs, so identical turns give an identical prompt
prefix and the model's evaluated state can be reused.

Also converts SillyTavern World Info JSON and V2 ``character_book`` objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from errors import PersonaError
from personas.macros import macro_problem

Position = Literal["before_char", "after_char"]
SelectiveLogic = Literal["and_any", "and_all", "not_any", "not_all"]

DEFAULT_SCAN_DEPTH = 4
DEFAULT_TOKEN_BUDGET = 400
DEFAULT_PRIORITY = 10
DEFAULT_ORDER = 100

# SillyTavern's numeric selectiveLogic values.
_ST_LOGIC: dict[int, SelectiveLogic] = {0: "and_any", 1: "not_all", 2: "not_any", 3: "and_all"}
_ST_LOGIC_BACK = {name: number for number, name in _ST_LOGIC.items()}
# Entry extensions that hearth maps to its own fields (popped on import, written on export).
_OWNED_EXTENSIONS = ("selectiveLogic", "match_whole_words", "scan_depth")
# Entry keys only hearth's own format has (a V2 character_book keeps these in extensions).
_HEARTH_ONLY_KEYS = frozenset({"uid", "selective_logic", "match_whole_words", "scan_depth", "order"})


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
        problem = macro_problem(value)
        if problem:
            raise ValueError(problem)
        return value


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


@lru_cache(maxsize=4096)
def _key_pattern(key: str, case_sensitive: bool, whole_words: bool) -> re.Pattern[str]:
    """Compile a key once; ``/regex/flags`` keys are SillyTavern's regex keys."""
    regex = re.fullmatch(r"/(.+)/([a-z]*)", key, re.DOTALL)
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


# ---------------------------------------------------------------------------- conversion


def _build(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    """Validate into ``model``; the first error becomes one PersonaError line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PersonaError(f"{where}: {loc}: {first['msg']}{more}") from None


def _st_position(value: Any) -> Position:
    return "before_char" if value in (0, "0", "before_char") else "after_char"


def import_world_info(data: dict[str, Any], name: str) -> Lorebook:
    """A Lorebook from SillyTavern World Info JSON (``entries`` keyed by uid)."""
    raw_entries = data.get("entries") if isinstance(data, dict) else None
    if isinstance(raw_entries, list):
        raw_entries = dict(enumerate(raw_entries))
    if not isinstance(raw_entries, dict):
        raise PersonaError(f"{name}: not SillyTavern World Info: 'entries' must be an object")
    entries = []
    for index, (uid, raw) in enumerate(raw_entries.items()):
        if not isinstance(raw, dict):
            raise PersonaError(f"{name}: entries.{uid}: must be an object")
        logic = raw.get("selectiveLogic") or 0
        fields = {
            "uid": raw.get("uid", uid if str(uid).lstrip("-").isdigit() else index),
            "keys": raw.get("key"),
            "secondary_keys": raw.get("keysecondary"),
            "selective": bool(raw.get("selective", False)),
            "selective_logic": _ST_LOGIC.get(int(logic) if str(logic).isdigit() else 0, "and_any"),
            "constant": bool(raw.get("constant", False)),
            "enabled": not raw.get("disable", False),
            "case_sensitive": bool(raw.get("caseSensitive") or False),
            "match_whole_words": bool(raw.get("matchWholeWords") or False),
            "insertion_order": raw.get("order", DEFAULT_ORDER),
            "position": _st_position(raw.get("position", 0)),
            "scan_depth": raw.get("scanDepth"),
            "content": raw.get("content") or "",
            "comment": raw.get("comment") or "",
        }
        entries.append(_build(LoreEntry, fields, f"{name}: entries.{uid}"))
    book = {"name": data.get("name") or name, "description": data.get("description") or ""}
    return _build(Lorebook, {**book, "entries": entries}, name)


def lore_from_character_book(book: dict[str, Any], fallback_name: str) -> Lorebook:
    """A Lorebook from a V2/V3 card's ``character_book`` object."""
    if not isinstance(book, dict):
        raise PersonaError(f"{fallback_name}: character_book must be an object")
    raw_entries = book.get("entries") or []
    if not isinstance(raw_entries, list):
        raise PersonaError(f"{fallback_name}: character_book.entries must be a list")
    entries = []
    for index, raw in enumerate(raw_entries):
        if not isinstance(raw, dict):
            raise PersonaError(f"{fallback_name}: character_book.entries.{index}: must be an object")
        extensions = dict(raw.get("extensions") or {})
        owned = {key: extensions.pop(key) for key in _OWNED_EXTENSIONS if key in extensions}
        uid = raw.get("id")
        fields = {
            "uid": uid if isinstance(uid, int) or str(uid).isdigit() else index,
            "keys": raw.get("keys"),
            "secondary_keys": raw.get("secondary_keys"),
            "selective": bool(raw.get("selective", False)),
            "selective_logic": _ST_LOGIC.get(owned.get("selectiveLogic") or 0, "and_any"),
            "constant": bool(raw.get("constant", False)),
            "enabled": bool(raw.get("enabled", True)),
            "case_sensitive": bool(raw.get("case_sensitive") or False),
            "match_whole_words": bool(owned.get("match_whole_words") or False),
            "insertion_order": raw.get("insertion_order", DEFAULT_ORDER),
            "priority": raw.get("priority") if raw.get("priority") is not None else DEFAULT_PRIORITY,
            "position": "after_char" if raw.get("position") == "after_char" else "before_char",
            "scan_depth": owned.get("scan_depth"),
            "content": raw.get("content") or "",
            "comment": raw.get("comment") or "",
            "extensions": extensions,
        }
        entries.append(_build(LoreEntry, fields, f"{fallback_name}: character_book.entries.{index}"))
    fields = {
        "name": book.get("name") or fallback_name,
        "description": book.get("description") or "",
        "scan_depth": book.get("scan_depth") if book.get("scan_depth") is not None else DEFAULT_SCAN_DEPTH,
        "token_budget": book.get("token_budget") if book.get("token_budget") is not None else DEFAULT_TOKEN_BUDGET,
        "recursive_scanning": bool(book.get("recursive_scanning", False)),
        "extensions": dict(book.get("extensions") or {}),
        "entries": entries,
    }
    return _build(Lorebook, fields, fallback_name)


def lore_to_character_book(book: Lorebook) -> dict[str, Any]:
    """A V2 ``character_book`` object; hearth-only fields ride in entry ``extensions``."""
    entries = []
    for entry in book.entries:
        extensions = {
            **entry.extensions,
            "selectiveLogic": _ST_LOGIC_BACK[entry.selective_logic],
            "match_whole_words": entry.match_whole_words,
            "scan_depth": entry.scan_depth,
        }
        entries.append(
            {
                "id": entry.uid,
                "keys": list(entry.keys),
                "secondary_keys": list(entry.secondary_keys),
                "comment": entry.comment,
                "content": entry.content,
                "constant": entry.constant,
                "selective": entry.selective,
                "insertion_order": entry.insertion_order,
                "enabled": entry.enabled,
                "position": entry.position,
                "priority": entry.priority,
                "case_sensitive": entry.case_sensitive,
                "extensions": extensions,
            }
        )
    return {
        "name": book.name,
        "description": book.description,
        "scan_depth": book.scan_depth,
        "token_budget": book.token_budget,
        "recursive_scanning": book.recursive_scanning,
        "extensions": dict(book.extensions),
        "entries": entries,
    }


def lorebook_format(data: Any) -> Literal["worldinfo", "character_book", "hearth"]:
    """Tell SillyTavern World Info, a V2 ``character_book`` and hearth's own format apart."""
    entries = data.get("entries") if isinstance(data, dict) else None
    if isinstance(entries, dict):
        return "worldinfo"
    if isinstance(entries, list):
        rows = [e for e in entries if isinstance(e, dict)]
        card_like = any("insertion_order" in e or "id" in e for e in rows)
        if card_like and not any(_HEARTH_ONLY_KEYS & e.keys() for e in rows):
            return "character_book"
    return "hearth"


def parse_lorebook(data: Any, name: str, where: str = "") -> Lorebook:
    """Any supported lorebook JSON/YAML object, format auto-detected; ``name`` if it has none."""
    where = where or name
    if not isinstance(data, dict):
        raise PersonaError(f"{where}: a lorebook must be an object with 'entries'")
    kind = lorebook_format(data)
    if kind == "worldinfo":
        return import_world_info(data, data.get("name") or name)
    if kind == "character_book":
        return lore_from_character_book(data, name)
    return _build(Lorebook, {"name": name, **data}, where)
