"""CHARX (V3 zip) cards: the real Seraphina card repacked as CHARX, and hostile archives."""

from __future__ import annotations

import base64
import json
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

from errors import PersonaError
from personas import Persona, PersonaLibrary, read_card
from personas.charx import MAX_CHARX_ENTRIES
from personas.png import read_chunks, text_chunks

ICON = "embeded://assets/icon/images/main.png"  # sic: the spec's spelling
V3_EXTRAS = {
    "nickname": "Sera",
    "source": ["https://example.org/seraphina"],
    "creation_date": 1_700_000_000,
    "modification_date": 1_700_000_500,
    "assets": [
        {"type": "icon", "uri": ICON, "name": "main", "ext": "png"},
        {"type": "background", "uri": "https://example.org/forest.png", "name": "forest", "ext": "png"},
    ],
}


def seraphina_v3(seraphina_png: Path) -> dict[str, Any]:
    """Seraphina's own card data as V3, with the V3-only fields added."""
    texts = text_chunks(read_chunks(seraphina_png.read_bytes(), "s"), "s", 1 << 23)
    card = json.loads(base64.b64decode(texts.get("ccv3") or texts["chara"]))
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": {**card["data"], **V3_EXTRAS}}


def write_zip(path: Path, entries: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


@pytest.fixture
def seraphina_charx(seraphina_png: Path, tmp_path: Path) -> Path:
    card = json.dumps(seraphina_v3(seraphina_png)).encode("utf-8")
    icon = read_card(seraphina_png).image
    assert icon is not None
    entries = {"card.json": card, "assets/icon/images/main.png": icon, "assets/other/notes.txt": b"x"}
    return write_zip(tmp_path / "seraphina.charx", entries)


def test_charx_imports_with_avatar_lorebook_and_v3_fields(seraphina_charx: Path, tmp_path: Path) -> None:
    library = PersonaLibrary([tmp_path / "lib"], include_builtin=False)
    persona = library.import_file(seraphina_charx, tmp_path / "lib")
    assert persona.name == "Seraphina" and persona.nickname == "Sera"
    assert persona.card_source == ["https://example.org/seraphina"]
    assert (persona.creation_date, persona.modification_date) == (1_700_000_000, 1_700_000_500)
    assert [a.uri for a in persona.assets] == ["ccdefault:", "https://example.org/forest.png"]
    assert persona.avatar and Path(persona.avatar).read_bytes().startswith(b"\x89PNG")
    assert library.lorebooks_for(persona) and library.lorebooks_for(persona)[0].entries


def test_nickname_is_char_in_prompts_while_name_stays_the_key(seraphina_charx: Path) -> None:
    persona = read_card(seraphina_charx).persona
    assert persona.render("I am {{char}}.", "Ann") == "I am Sera."
    assert persona.name == "Seraphina"


def round_trip(card: Path, tmp_path: Path) -> tuple[Persona, Persona, dict, dict]:
    """Import ``card``, export it as PNG, read both chunks, import that PNG into a fresh library.

    Returns the first and second persona and the V2 and V3 cards; also checks the lore survived.
    """
    library = PersonaLibrary([tmp_path / "a"], include_builtin=False)
    first = library.import_file(card, tmp_path / "a")
    png = tmp_path / "out.png"
    png.write_bytes(library.export_card(first, png=True))
    texts = text_chunks(read_chunks(png.read_bytes(), "out"), "out", 1 << 23)
    v2, v3 = (json.loads(base64.b64decode(texts[key])) for key in ("chara", "ccv3"))
    again = PersonaLibrary([tmp_path / "b"], include_builtin=False)
    second = again.import_file(png, tmp_path / "b")
    assert again.lorebooks_for(second)[0].entries == library.lorebooks_for(first)[0].entries
    return first, second, v2, v3


def test_round_trip_keeps_the_persona_and_v3_fields(seraphina_charx: Path, tmp_path: Path) -> None:
    first, second, v2, v3 = round_trip(seraphina_charx, tmp_path)
    assert (v2["spec"], v3["spec"], v3["spec_version"]) == ("chara_card_v2", "chara_card_v3", "3.0")
    assert v3["data"] == v2["data"] and v3["data"]["nickname"] == "Sera"
    assert second.model_dump(exclude={"avatar"}) == first.model_dump(exclude={"avatar"})
    assert second.creation_date == 1_700_000_000 and second.card_source == first.card_source


def test_seraphina_png_round_trips_through_both_chunks(seraphina_png: Path, tmp_path: Path) -> None:
    first, second, v2, v3 = round_trip(seraphina_png, tmp_path)
    assert (v2["spec"], v3["spec"]) == ("chara_card_v2", "chara_card_v3")
    assert second.model_dump(exclude={"avatar"}) == first.model_dump(exclude={"avatar"})
    assert Path(second.avatar or "").read_bytes() == Path(first.avatar or "").read_bytes()


def test_charx_without_card_json_is_one_line(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "x.charx", {"readme.txt": b"hi"})
    with pytest.raises(PersonaError, match=r"no card\.json") as info:
        read_card(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("entries", "symlink", "message"),
    [
        ({"card.json": b"{}", "../evil": b"x"}, None, "climbs out"),
        ({"card.json": b"{}", "assets/../../evil": b"x"}, None, "climbs out"),
        ({"card.json": b"{}", "/etc/evil": b"x"}, None, "absolute path"),
        ({"card.json": b"{}", "C:/evil": b"x"}, None, "absolute path"),
        ({"card.json": b"{}"}, "assets/link", "symlink"),
        ({"card.json": b"{}", "bomb.bin": b"\0" * (30 * 2**20)}, None, "zip bomb"),
        ({"card.json": b"{}", **{f"a/{i}": b"" for i in range(MAX_CHARX_ENTRIES + 1)}}, None, "too many entries"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "symlink", "bomb", "entries"],
)
def test_hostile_charx_is_refused_in_one_line(
    tmp_path: Path, entries: dict[str, bytes], symlink: str | None, message: str
) -> None:
    path = write_zip(tmp_path / "bad.charx", entries, symlink=symlink)
    library = PersonaLibrary([tmp_path / "lib"], include_builtin=False)
    with pytest.raises(PersonaError, match=message) as info:
        library.import_file(path, tmp_path / "lib")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "lib").exists(), "nothing is written"


def test_charx_unpacking_past_the_total_is_refused(tmp_path: Path) -> None:
    """Entries that compress modestly (no single bomb) but add up past the limit."""
    import os

    chunk = os.urandom(20 * 1024) + b"\0" * (2**20 - 20 * 1024)  # about 50:1, under the ratio limit
    entries = {"card.json": b"{}", **{f"assets/{i}.bin": chunk for i in range(70)}}
    path = write_zip(tmp_path / "big.charx", entries)
    with pytest.raises(PersonaError, match="unpacks to more than"):
        read_card(path)


def test_not_a_zip_and_oversized_charx(tmp_path: Path) -> None:
    broken = tmp_path / "broken.charx"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(PersonaError, match="not a readable CHARX"):
        read_card(broken)
    big = tmp_path / "big.charx"
    big.write_bytes(b"PK\x03\x04" + b"\0" * (21 * 2**20))
    with pytest.raises(PersonaError, match="too large"):
        read_card(big)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(1_700_000_000, 1_700_000_000), (1_700_000_000_123, 1_700_000_000), ("1700000000", 1_700_000_000),
     (1.7e9, 1_700_000_000), ("yesterday", None), (True, None), (-5, None)],
)  # fmt: skip
def test_card_dates_are_unix_seconds_or_dropped(value: object, seconds: int | None) -> None:
    from personas import parse_card_json

    card = parse_card_json({"spec": "chara_card_v3", "data": {"name": "A", "creation_date": value}})
    assert card.persona.creation_date == seconds
