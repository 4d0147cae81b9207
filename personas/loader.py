"""Read and write persona YAML files and lorebook files (JSON or YAML)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from errors import PersonaError
from personas.lore import Lorebook
from personas.model import Persona
from personas.st_lore import lorebook_format, parse_lorebook
from personas.yamlio import dump_yaml, parse_yaml, read_text, validation_message

PERSONA_SUFFIXES = (".yaml", ".yml")
LOREBOOK_SUFFIXES = (".json", ".yaml", ".yml")


def parse_persona_yaml(text: str, where: str, base_dir: Path | None = None) -> Persona:
    """A Persona from YAML text; ``where`` names the file in errors, ``base_dir`` anchors avatar paths."""
    data, lines = parse_yaml(text, where)
    if not isinstance(data, dict):
        raise PersonaError(f"{where}:1: expected a mapping of persona fields (name, description, ...)")
    try:
        persona = Persona.model_validate(data)
    except ValidationError as exc:
        raise PersonaError(validation_message(exc, where, lines)) from None
    updates: dict[str, Any] = {"source": where}
    if persona.avatar and base_dir is not None and not Path(persona.avatar).is_absolute():
        updates["avatar"] = str((base_dir / persona.avatar).resolve())
    return persona.model_copy(update=updates)


def load_persona_file(path: Path | str) -> Persona:
    """Load and validate one persona YAML file. Errors name the file, line and field."""
    path = Path(path)
    return parse_persona_yaml(read_text(path), str(path), path.parent)


def persona_to_yaml(persona: Persona) -> str:
    """YAML for a persona, defaults left out; ``source`` is never written."""
    data = persona.model_dump(mode="json", exclude_defaults=True)
    return dump_yaml(data)


def load_lorebook_file(path: Path | str) -> Lorebook:
    """A lorebook from hearth JSON/YAML or SillyTavern World Info JSON; named after the file."""
    path = Path(path)
    text = read_text(path)
    name = path.stem
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PersonaError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        return parse_lorebook(data, name, str(path))
    data, lines = parse_yaml(text, str(path))
    if isinstance(data, dict) and lorebook_format(data) == "hearth":
        try:
            return Lorebook.model_validate({"name": name, **data})
        except ValidationError as exc:
            raise PersonaError(validation_message(exc, str(path), lines)) from None
    return parse_lorebook(data, name, str(path))


def lorebook_to_json(book: Lorebook) -> str:
    """hearth's own lorebook JSON (what ``save_lorebook`` writes)."""
    return json.dumps(book.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
