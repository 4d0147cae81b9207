"""SillyTavern lorebooks: World Info JSON and V2/V3 ``character_book`` objects, both ways.

Kept apart from ``personas.lore`` (hearth's own model and activation) so the foreign
formats, their numeric codes and their quirks live in one place.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from errors import PersonaError
from personas.lore import (
    DEFAULT_ORDER,
    DEFAULT_PRIORITY,
    DEFAULT_SCAN_DEPTH,
    DEFAULT_TOKEN_BUDGET,
    Lorebook,
    LoreEntry,
    Position,
    SelectiveLogic,
)

# SillyTavern's numeric selectiveLogic values.
_ST_LOGIC: dict[int, SelectiveLogic] = {0: "and_any", 1: "not_all", 2: "not_any", 3: "and_all"}
_ST_LOGIC_BACK = {name: number for number, name in _ST_LOGIC.items()}
# Entry extensions that hearth maps to its own fields (popped on import, written on export).
_OWNED_EXTENSIONS = ("selectiveLogic", "match_whole_words", "scan_depth")
# Entry keys only hearth's own format has (a V2 character_book keeps these in extensions).
_HEARTH_ONLY_KEYS = frozenset({"uid", "selective_logic", "match_whole_words", "scan_depth", "order"})


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
