"""Character cards: V1/V2/V3 import from JSON and PNG, export, and round trips."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from personas import (
    DEFAULT_SYSTEM_PROMPT,
    Lorebook,
    LoreEntry,
    Persona,
    card_png_bytes,
    export_card_json,
    export_card_png,
    parse_card_json,
    parse_card_png,
    read_card,
)
from personas.cards import placeholder_png
from personas.png import add_text, read_chunks, text_chunks, write_png


def png_with(texts: dict[str, str], image: bytes | None = None) -> bytes:
    chunks = read_chunks(image or placeholder_png("x", (8, 8)), "test")
    for key, value in texts.items():
        chunks = add_text(chunks, key, value)
    return write_png(chunks)


def b64(card: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(card).encode()).decode()


def test_seraphina_png_real_values(seraphina_png: Path) -> None:
    card = read_card(seraphina_png)
    persona = card.persona
    assert persona.name == "Seraphina"
    assert persona.description.startswith('[Seraphina\'s Personality= "caring", "protective"')
    assert "amber eyes" in persona.description
    assert "\r" not in persona.description
    assert persona.greeting.startswith("*You wake with a start")
    assert persona.creator == "OtisAlejandro"
    assert persona.creator_notes == "ST Default Bot contest winner: roleplay bots category"
    assert persona.extensions == {"talkativeness": "0.5", "fav": False, "world": "Eldoria"}
    assert persona.system_prompt == DEFAULT_SYSTEM_PROMPT  # the card's is empty
    assert persona.example_dialogues == []
    assert card.lorebook is not None
    assert card.lorebook.name == "Eldoria"
    assert len(card.lorebook.entries) == 4
    assert card.lorebook.entries[1].keys == ["shadowfang", "beast", "monster", "monsters", "beasts"]
    assert card.lorebook.entries[0].extensions == {"position": 0, "probability": None, "useProbability": False}
    with Image.open(io.BytesIO(card.image)) as image:
        assert image.size == (400, 600)
    assert "chara" not in text_chunks(read_chunks(card.image, "x"), "x", 1 << 20)


def test_seraphina_round_trip_json_and_png(seraphina_png: Path, tmp_path: Path) -> None:
    card = read_card(seraphina_png)
    again = parse_card_json(json.loads(json.dumps(export_card_json(card.persona, card.lorebook))))
    assert again.persona == card.persona
    assert again.lorebook == card.lorebook
    out = export_card_png(card.persona, card.lorebook, tmp_path / "out.png", card.image)
    from_png = read_card(out)
    assert from_png.persona == card.persona
    assert from_png.lorebook == card.lorebook
    assert from_png.image == card.image


def test_export_is_v2_with_v1_mirror() -> None:
    persona = Persona(
        name="Kit",
        greeting="Hi {{user}}",
        example_dialogues=["{{user}}: a\n{{char}}: b", "{{user}}: c\n{{char}}: d"],
        system_prompt="Custom.",
    )
    card = export_card_json(persona)
    assert card["spec"] == "chara_card_v2"
    assert card["spec_version"] == "2.0"
    assert card["first_mes"] == card["data"]["first_mes"] == "Hi {{user}}"
    assert card["data"]["mes_example"] == "<START>\n{{user}}: a\n{{char}}: b\n<START>\n{{user}}: c\n{{char}}: d"
    assert card["data"]["system_prompt"] == "Custom."
    assert "character_book" not in card["data"]
    assert "hearth" not in card["data"]["extensions"]
    assert export_card_json(Persona(name="Kit"))["data"]["system_prompt"] == ""


def test_hearth_fields_round_trip_through_extensions(tmp_path: Path) -> None:
    persona = Persona(
        name="Kit",
        description="A fox.",
        personality="sly",
        scenario="woods",
        greeting="Hi",
        alternate_greetings=["Yo {{user}}"],
        example_dialogues=["{{user}}: a\n{{char}}: b"],
        system_prompt="{{original}} Be brief.",
        post_history_instructions="Stay sly.",
        sampling={"temperature": 1.2, "stop": ["\n"]},
        wake_words=["fox"],
        model="gemma-3-270m",
        creator_notes="notes",
        creator="me",
        character_version="2",
        tags=["fox"],
        extensions={"depth_prompt": {"depth": 4}},
    )
    book = Lorebook(name="Woods", entries=[LoreEntry(uid=3, keys=["tree"], content="Trees.", priority=2)])
    card = export_card_json(persona, book)
    assert card["data"]["extensions"]["hearth"] == {
        "sampling": {"temperature": 1.2, "stop": ["\n"]},
        "wake_words": ["fox"],
        "model": "gemma-3-270m",
    }
    assert parse_card_json(card).persona == persona
    path = export_card_png(persona, book, tmp_path / "kit.png")  # no avatar: placeholder image
    again = read_card(path)
    assert again.persona == persona
    assert again.lorebook == book
    with Image.open(path) as image:
        assert image.size == (256, 384)


def test_v1_flat_card_and_legacy_macros() -> None:
    card = {
        "name": "Old",
        "description": "<BOT> likes <USER>.",
        "personality": "grumpy",
        "scenario": "",
        "first_mes": "What, <user>?",
        "mes_example": "<START>\n<USER>: hi\n<BOT>: hmph\n<START>\n\n<start>\n{{user}}: bye\n{{char}}: good",
    }
    persona = parse_card_json(card).persona
    assert persona.description == "{{char}} likes {{user}}."
    assert persona.greeting == "What, {{user}}?"
    assert persona.example_dialogues == ["{{user}}: hi\n{{char}}: hmph", "{{user}}: bye\n{{char}}: good"]
    assert parse_card_json(card).lorebook is None


def test_v3_card_prefers_ccv3_chunk() -> None:
    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": "Nova",
            "description": "V3 text",
            "nickname": "N",
            "group_only_greetings": [],
            "character_book": {"entries": [{"keys": ["star"], "content": "Stars.", "insertion_order": 1}]},
        },
    }
    v2 = {"spec": "chara_card_v2", "data": {"name": "Old Nova"}}
    card = parse_card_png(png_with({"chara": b64(v2), "ccv3": b64(v3)}))
    assert card.persona.name == "Nova"
    assert card.persona.description == "V3 text"
    assert card.lorebook is not None and card.lorebook.name == "Nova"
    assert card.lorebook.entries[0].keys == ["star"]


def test_empty_character_book_is_no_lorebook() -> None:
    card = parse_card_json({"spec": "chara_card_v2", "data": {"name": "A", "character_book": {"entries": []}}})
    assert card.lorebook is None


def test_png_export_replaces_old_card_chunks(seraphina_png: Path) -> None:
    raw = seraphina_png.read_bytes()
    out = card_png_bytes(Persona(name="Replacement"), None, raw)
    texts = text_chunks(read_chunks(out, "x"), "x", 1 << 22)
    assert list(texts) == ["chara", "ccv3"]  # the old card's chunks are gone; V2 then V3, as SillyTavern writes
    assert parse_card_png(out).persona.name == "Replacement"


def test_non_png_avatar_is_converted(tmp_path: Path) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (10, 12), (200, 10, 10)).save(jpeg, format="JPEG")
    avatar = tmp_path / "kit.jpg"
    avatar.write_bytes(jpeg.getvalue())
    out = card_png_bytes(Persona(name="Kit", avatar=str(avatar)))
    with Image.open(io.BytesIO(out)) as image:
        assert (image.format, image.size) == ("PNG", (10, 12))
    assert parse_card_png(out).persona.name == "Kit"
