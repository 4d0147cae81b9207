"""Character Card import and export (V1, V2 ``chara_card_v2``, V3 ``chara_card_v3``).

Cards come as JSON, as PNG images carrying base64 JSON in a ``chara`` (V1/V2) or
``ccv3`` (V3, preferred) text chunk, or as CHARX zips (``personas.charx``). Export writes
V2, which SillyTavern and most tools read, with the V1 keys mirrored at the top level; a
PNG also gets the same card as V3 in a ``ccv3`` chunk, as SillyTavern writes it. V3-only
fields (``nickname``, ``assets``, ``source``, dates) ride along in ``data`` both times.
hearth-only settings (sampling, wake words, preferred model) travel in
``extensions.hearth`` so a hearth card round-trips unchanged.

Limits: a card file may be at most 20 MB and its JSON at most 2 MB; bigger inputs are
refused before they are decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ValidationError

from errors import PersonaError
from personas.charx import ZIP_SIGNATURE, parse_charx
from personas.files import write_all
from personas.images import as_png
from personas.lore import Lorebook
from personas.model import DEFAULT_SYSTEM_PROMPT, Persona
from personas.png import PNG_SIGNATURE, add_text, read_chunks, strip_text, text_chunks, write_png
from personas.st_lore import lore_from_character_book, lore_to_character_book

MAX_CARD_FILE_BYTES = 20 * 1024 * 1024
MAX_CARD_JSON_BYTES = 2 * 1024 * 1024
SUPPORTED_SPECS = ("chara_card_v2", "chara_card_v3")

_TEXT_FIELDS = {  # card key -> persona field
    "name": "name",
    "description": "description",
    "personality": "personality",
    "scenario": "scenario",
    "first_mes": "greeting",
    "system_prompt": "system_prompt",
    "post_history_instructions": "post_history_instructions",
    "creator_notes": "creator_notes",
    "creator": "creator",
    "character_version": "character_version",
    "nickname": "nickname",
}
_LIST_FIELDS = {
    "alternate_greetings": "alternate_greetings",
    "group_only_greetings": "group_only_greetings",
    "tags": "tags",
    "assets": "assets",
    "source": "card_source",
}
_DATE_FIELDS = ("creation_date", "modification_date")
_CARD_NAME = {
    **{v: k for k, v in _TEXT_FIELDS.items()},
    **{v: k for k, v in _LIST_FIELDS.items()},
    "example_dialogues": "mes_example",
}
_LEGACY_MACROS = re.compile(r"<(USER|BOT|CHAR)>", re.IGNORECASE)
_START = re.compile(r"<START>", re.IGNORECASE)


@dataclass(frozen=True)
class Card:
    """An imported card: the persona, its embedded lorebook, and the PNG image (card data stripped)."""

    persona: Persona
    lorebook: Lorebook | None = None
    image: bytes | None = None


# ---------------------------------------------------------------------------- import


def read_card(path: Path | str) -> Card:
    """A card from a ``.json``, ``.png`` or ``.charx`` file (detected by content)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CARD_FILE_BYTES:
            raise PersonaError(f"{path}: card file is too large ({size / 2**20:.1f} MB; limit 20 MB)")
        raw = path.read_bytes()
    except OSError as exc:
        raise PersonaError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_card_bytes(raw, str(path))


def parse_card_bytes(raw: bytes, where: str = "card") -> Card:
    """A card from file bytes: PNG or CHARX (zip) by their signatures, else JSON."""
    if raw.startswith(PNG_SIGNATURE):
        return parse_card_png(raw, where)
    if raw.startswith(ZIP_SIGNATURE):
        return parse_charx(raw, where, parse_card_json)
    if len(raw) > MAX_CARD_JSON_BYTES:
        raise PersonaError(f"{where}: card JSON is too large ({len(raw) / 2**20:.1f} MB; limit 2 MB)")
    return parse_card_json(_load_json(raw, where), where)


def parse_card_png(raw: bytes, where: str = "card.png") -> Card:
    """A card from PNG bytes; the ``ccv3`` chunk wins over ``chara``."""
    if len(raw) > MAX_CARD_FILE_BYTES:
        raise PersonaError(f"{where}: card file is too large ({len(raw) / 2**20:.1f} MB; limit 20 MB)")
    chunks = read_chunks(raw, where)
    texts = text_chunks(chunks, where, limit=MAX_CARD_JSON_BYTES * 2)
    payload = texts.get("ccv3") or texts.get("chara")
    if payload is None:
        raise PersonaError(f"{where}: PNG has no character card (no 'chara' or 'ccv3' text chunk)")
    card = parse_card_json(_load_json(_unbase64(payload, where), where), where)
    return Card(card.persona, card.lorebook, write_png(strip_text(chunks)))


def parse_card_json(data: Any, where: str = "card") -> Card:
    """A card from its decoded JSON object (V1 flat, V2 or V3)."""
    if not isinstance(data, dict):
        raise PersonaError(f"{where}: card must be a JSON object")
    spec = data.get("spec")
    fields: Any
    if spec is None:
        fields = data
    elif spec in SUPPORTED_SPECS:
        fields = data.get("data")
        if not isinstance(fields, dict):
            raise PersonaError(f"{where}: {spec} card has no 'data' object")
    else:
        raise PersonaError(f"{where}: unknown card spec {spec!r} (supported: V1, {', '.join(SUPPORTED_SPECS)})")
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PersonaError(f"{where}: card has no name")
    persona = _persona_from_fields(fields, where)
    book = None
    if fields.get("character_book"):
        book = lore_from_character_book(fields["character_book"], persona.name)
        book = book if book.entries else None
    return Card(persona, book)


def _load_json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise PersonaError(f"{where}: card JSON is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PersonaError(f"{where}: invalid card JSON: {exc.msg} (line {exc.lineno})") from None


def _unbase64(text: str, where: str) -> bytes:
    compact = "".join(text.split())
    if len(compact) > (MAX_CARD_JSON_BYTES * 4) // 3 + 4:
        raise PersonaError(f"{where}: card JSON is too large (limit 2 MB)")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise PersonaError(f"{where}: card chunk is not valid base64") from None


def _legacy(value: Any) -> Any:
    """Old cards write ``<USER>``/``<BOT>``; turn them into our macros."""
    if isinstance(value, str):
        return _LEGACY_MACROS.sub(lambda m: "{{user}}" if m.group(1).upper() == "USER" else "{{char}}", value)
    if isinstance(value, list):
        return [_legacy(item) for item in value]
    return value


def _unix_seconds(value: Any) -> int | None:
    """V3 dates are unix seconds; tools also write floats, digit strings or milliseconds.

    A date is metadata, never worth refusing a card over, so anything else is dropped.
    """
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    seconds = int(value)
    return seconds // 1000 if seconds > 100_000_000_000 else seconds  # milliseconds


def split_examples(mes_example: str) -> list[str]:
    """``mes_example`` text split on ``<START>`` into separate dialogues, blanks dropped."""
    parts = (part.strip() for part in _START.split(mes_example.replace("\r\n", "\n")))
    return [part for part in parts if part]


def _persona_from_fields(fields: dict[str, Any], where: str) -> Persona:
    data: dict[str, Any] = {}
    for card_key, field in _TEXT_FIELDS.items():
        value = fields.get(card_key)
        if value is not None and value != "":
            data[field] = _legacy(value)
    for card_key, field in _LIST_FIELDS.items():
        if fields.get(card_key) is not None:
            data[field] = _legacy(fields[card_key])
    for key in _DATE_FIELDS:
        data[key] = _unix_seconds(fields.get(key))
    mes_example = fields.get("mes_example")
    if isinstance(mes_example, str):
        data["example_dialogues"] = split_examples(_legacy(mes_example))
    elif mes_example is not None:
        data["example_dialogues"] = mes_example  # let validation name the wrong type
    extensions = fields.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise PersonaError(f"{where}: extensions: must be an object")
    extensions = dict(extensions)
    hearth = extensions.pop("hearth", None)
    if isinstance(hearth, dict):
        if "sampling" in hearth:
            data["sampling"] = hearth["sampling"]
        for key in ("wake_words", "model"):
            if key in hearth:
                data[key] = hearth[key]
    data["extensions"] = extensions
    try:
        return Persona.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        if loc and loc[0] in _CARD_NAME:
            loc[0] = _CARD_NAME[loc[0]]
        elif loc and loc[0] in ("sampling", "wake_words", "model"):
            loc[0] = f"extensions.hearth.{loc[0]}"
        field = ".".join(str(part) for part in loc)
        raise PersonaError(f"{where}: {field}: {first['msg'].removeprefix('Value error, ')}") from None


# ---------------------------------------------------------------------------- export


def export_card_json(persona: Persona, lorebook: Lorebook | None = None) -> dict[str, Any]:
    """A V2 card (``chara_card_v2``) with the V1 keys mirrored, as SillyTavern writes it."""
    extensions = dict(persona.extensions)
    hearth: dict[str, Any] = {}
    if persona.sampling.as_dict():
        hearth["sampling"] = persona.sampling.as_dict()
    if persona.wake_words:
        hearth["wake_words"] = list(persona.wake_words)
    if persona.model:
        hearth["model"] = persona.model
    if hearth:
        extensions["hearth"] = hearth
    if persona.talkativeness is not None:
        extensions["talkativeness"] = str(persona.talkativeness)  # where SillyTavern keeps it, as text
    mes_example = "\n".join(f"<START>\n{text.strip()}" for text in persona.example_dialogues)
    data: dict[str, Any] = {
        "name": persona.name,
        "description": persona.description,
        "personality": persona.personality,
        "scenario": persona.scenario,
        "first_mes": persona.greeting,
        "mes_example": mes_example,
        "creator_notes": persona.creator_notes,
        "system_prompt": "" if persona.system_prompt == DEFAULT_SYSTEM_PROMPT else persona.system_prompt,
        "post_history_instructions": persona.post_history_instructions,
        "alternate_greetings": list(persona.alternate_greetings),
        "tags": list(persona.tags),
        "creator": persona.creator,
        "character_version": persona.character_version,
        "extensions": extensions,
    }
    data.update(_v3_fields(persona))
    if lorebook is not None:
        data["character_book"] = lore_to_character_book(lorebook)
    v1 = {key: data[key] for key in ("name", "description", "personality", "scenario", "first_mes", "mes_example")}
    return {**v1, "spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def _v3_fields(persona: Persona) -> dict[str, Any]:
    """The V3 fields a persona carries, only those set (V2 readers ignore them)."""
    fields: dict[str, Any] = {}
    if persona.nickname:
        fields["nickname"] = persona.nickname
    if persona.assets:
        fields["assets"] = [asset.model_dump(mode="json") for asset in persona.assets]
    if persona.card_source:
        fields["source"] = list(persona.card_source)
    if persona.group_only_greetings:
        fields["group_only_greetings"] = list(persona.group_only_greetings)
    for key in _DATE_FIELDS:
        if getattr(persona, key) is not None:
            fields[key] = getattr(persona, key)
    return fields


def export_card_v3(persona: Persona, lorebook: Lorebook | None = None) -> dict[str, Any]:
    """The V3 card (``chara_card_v3``): SillyTavern writes its V2 card with the spec changed."""
    return {**export_card_json(persona, lorebook), "spec": "chara_card_v3", "spec_version": "3.0"}


def _chunk_payload(card: dict[str, Any], name: str) -> str:
    encoded = json.dumps(card, ensure_ascii=False).encode("utf-8")
    if len(encoded) > MAX_CARD_JSON_BYTES:
        raise PersonaError(f"{name}: card JSON is too large to export ({len(encoded)} bytes; limit 2 MB)")
    return base64.b64encode(encoded).decode("ascii")


def card_png_bytes(persona: Persona, lorebook: Lorebook | None = None, avatar_png: bytes | None = None) -> bytes:
    """PNG bytes: the avatar image (or a placeholder) with a ``chara`` chunk holding the V2 card
    and a ``ccv3`` chunk holding the same card as V3, both before IEND, as SillyTavern writes them."""
    v2 = _chunk_payload(export_card_json(persona, lorebook), persona.name)
    v3 = _chunk_payload(export_card_v3(persona, lorebook), persona.name)
    image = avatar_png if avatar_png is not None else _avatar_image(persona)
    chunks = read_chunks(as_png(image, persona.name), f"{persona.name}: avatar")
    return write_png(add_text(add_text(strip_text(chunks), "chara", v2), "ccv3", v3))


def export_card_png(
    persona: Persona, lorebook: Lorebook | None, path: Path | str, avatar_png: bytes | None = None
) -> Path:
    """Write a PNG card to ``path`` (atomically). The image is ``avatar_png``, the persona's
    avatar file, or a generated placeholder, in that order."""
    path = Path(path)
    write_all([(path, card_png_bytes(persona, lorebook, avatar_png))])
    return path


def _avatar_image(persona: Persona) -> bytes:
    if not persona.avatar:
        return placeholder_png(persona.name)
    try:
        return Path(persona.avatar).read_bytes()
    except OSError as exc:
        raise PersonaError(f"{persona.name}: avatar {persona.avatar}: cannot read: {exc.strerror or exc}") from None


def placeholder_png(name: str, size: tuple[int, int] = (256, 384)) -> bytes:
    """A small solid-colour portrait, its colour derived from the name (stable across runs)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    colour = tuple(64 + byte % 128 for byte in digest[:3])
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()
