"""Personas: the persona model, YAML loading, character cards and lorebooks.

Pure data and files; imports nothing from engine, memory or adapters. Every bad input
raises ``errors.PersonaError`` with a one-line, user-safe message.
"""

from __future__ import annotations

from personas.cards import (
    MAX_CARD_FILE_BYTES,
    MAX_CARD_JSON_BYTES,
    Card,
    card_png_bytes,
    export_card_json,
    export_card_png,
    export_card_v3,
    parse_card_bytes,
    parse_card_json,
    parse_card_png,
    read_card,
)
from personas.files import slugify
from personas.library import BUILTIN_DIR, PersonaLibrary
from personas.loader import load_lorebook_file, load_persona_file, lorebook_to_json, persona_to_yaml
from personas.lore import ActivatedEntry, Lorebook, LoreEntry, activate, is_regex_key, split_by_position
from personas.macros import KNOWN_MACROS, check_macros, render_macros
from personas.model import DEFAULT_SYSTEM_PROMPT, Persona, SamplingOverride
from personas.st_lore import import_world_info, lore_from_character_book, lore_to_character_book, parse_lorebook

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_SYSTEM_PROMPT",
    "KNOWN_MACROS",
    "MAX_CARD_FILE_BYTES",
    "MAX_CARD_JSON_BYTES",
    "ActivatedEntry",
    "Card",
    "LoreEntry",
    "Lorebook",
    "Persona",
    "PersonaLibrary",
    "SamplingOverride",
    "activate",
    "card_png_bytes",
    "check_macros",
    "export_card_json",
    "export_card_png",
    "export_card_v3",
    "import_world_info",
    "is_regex_key",
    "load_lorebook_file",
    "load_persona_file",
    "lore_from_character_book",
    "lore_to_character_book",
    "lorebook_to_json",
    "parse_card_bytes",
    "parse_card_json",
    "parse_card_png",
    "parse_lorebook",
    "persona_to_yaml",
    "read_card",
    "render_macros",
    "slugify",
    "split_by_position",
]
