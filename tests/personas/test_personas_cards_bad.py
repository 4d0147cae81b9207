"""Every kind of bad card fails with one PersonaError line, before anything is used."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest

from errors import PersonaError
from personas import MAX_CARD_FILE_BYTES, Persona, card_png_bytes, parse_card_json, read_card
from personas.cards import placeholder_png
from personas.png import add_text, read_chunks, write_png


def png_with_chara(text: str) -> bytes:
    return write_png(add_text(read_chunks(placeholder_png("x", (4, 4)), "t"), "chara", text))


def b64(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def expect_error(tmp_path: Path, raw: bytes, pattern: str, name: str = "card.png") -> str:
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(PersonaError, match=pattern) as info:
        read_card(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_not_a_png_signature(tmp_path: Path) -> None:
    expect_error(tmp_path, b"\x89PNX\r\n\x1a\n" + b"\0" * 30, "invalid card JSON|not UTF-8")
    from personas.cards import parse_card_png

    with pytest.raises(PersonaError, match="not a PNG file"):
        parse_card_png(b"GIF89a....")


def test_truncated_png(tmp_path: Path) -> None:
    good = png_with_chara(b64({"name": "A"}))
    expect_error(tmp_path, good[:-20], "malformed PNG")
    expect_error(tmp_path, good[:12], "malformed PNG: truncated chunk header")


def test_bad_crc(tmp_path: Path) -> None:
    good = bytearray(png_with_chara(b64({"name": "A"})))
    good[40] ^= 0xFF  # inside the IHDR/IDAT payload
    expect_error(tmp_path, bytes(good), "malformed PNG: bad CRC")


def test_png_without_ihdr(tmp_path: Path) -> None:
    iend = struct.pack(">I4s", 0, b"IEND") + struct.pack(">I", zlib.crc32(b"IEND"))
    expect_error(tmp_path, b"\x89PNG\r\n\x1a\n" + iend, "IHDR chunk missing")


def test_png_without_card_chunk(tmp_path: Path) -> None:
    message = expect_error(tmp_path, placeholder_png("plain"), "no character card")
    assert message.endswith("PNG has no character card (no 'chara' or 'ccv3' text chunk)")


def test_bad_base64(tmp_path: Path) -> None:
    expect_error(tmp_path, png_with_chara("not*base64!!"), "not valid base64")


def test_bad_json_in_png(tmp_path: Path) -> None:
    text = base64.b64encode(b'{"name": "A",').decode()
    expect_error(tmp_path, png_with_chara(text), "invalid card JSON: Expecting property name")


def test_bad_json_file(tmp_path: Path) -> None:
    expect_error(tmp_path, b'{"name": ', "invalid card JSON", "card.json")
    expect_error(tmp_path, b"[1, 2]", "card must be a JSON object", "list.json")


def test_json_too_large(tmp_path: Path) -> None:
    big = json.dumps({"name": "A", "description": "x" * (3 * 1024 * 1024)}).encode()
    expect_error(tmp_path, big, r"card JSON is too large \(3.0 MB; limit 2 MB\)", "big.json")
    expect_error(tmp_path, png_with_chara(base64.b64encode(big).decode()), "card JSON is too large")


def test_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:
        handle.truncate(MAX_CARD_FILE_BYTES + 1)  # sparse: costs no disk or time
    with pytest.raises(PersonaError, match=r"card file is too large \(20.0 MB; limit 20 MB\)"):
        read_card(path)


def test_export_refuses_oversized_card() -> None:
    with pytest.raises(PersonaError, match="too large to export"):
        card_png_bytes(Persona(name="A", description="x" * (2 * 1024 * 1024 + 1)))


def test_unknown_spec(tmp_path: Path) -> None:
    card = {"spec": "chara_card_v9", "data": {"name": "A"}}
    expect_error(tmp_path, png_with_chara(b64(card)), r"unknown card spec 'chara_card_v9'")


@pytest.mark.parametrize(
    "card",
    [
        {"spec": "chara_card_v2", "data": {"description": "no name"}},
        {"spec": "chara_card_v2", "data": {"name": "   "}},
        {"description": "v1 without a name"},
        {"entries": {"0": {"key": ["a"]}}},
    ],
)
def test_missing_name(tmp_path: Path, card: dict) -> None:
    expect_error(tmp_path, png_with_chara(b64(card)), "card has no name$")


def test_v2_without_data_object() -> None:
    with pytest.raises(PersonaError, match="chara_card_v2 card has no 'data' object"):
        parse_card_json({"spec": "chara_card_v2", "name": "A"})


def test_wrong_field_types_name_the_card_field() -> None:
    with pytest.raises(PersonaError, match=r"^card: first_mes: Input should be a valid string$"):
        parse_card_json({"spec": "chara_card_v2", "data": {"name": "A", "first_mes": 5}})
    with pytest.raises(PersonaError, match=r"^card: extensions.hearth.sampling.temperature:"):
        parse_card_json(
            {
                "spec": "chara_card_v2",
                "data": {"name": "A", "extensions": {"hearth": {"sampling": {"temperature": "hot"}}}},
            }
        )
    with pytest.raises(PersonaError, match=r"unknown macro \{\{idle_duration\}\}"):
        parse_card_json({"name": "A", "first_mes": "{{idle_duration}}"})


def test_bad_character_book() -> None:
    with pytest.raises(PersonaError, match=r"character_book.entries.0: insertion_order"):
        parse_card_json(
            {
                "spec": "chara_card_v2",
                "data": {"name": "A", "character_book": {"entries": [{"keys": [], "insertion_order": "x"}]}},
            }
        )
    with pytest.raises(PersonaError, match=r"character_book\.entries must be a list"):
        parse_card_json({"spec": "chara_card_v2", "data": {"name": "A", "character_book": {"entries": "x"}}})


def test_corrupt_compressed_text_chunk(tmp_path: Path) -> None:
    chunks = read_chunks(placeholder_png("x", (4, 4)), "t")
    from personas.png import Chunk

    bad = Chunk(b"zTXt", b"chara\0\0" + b"not zlib data")
    raw = write_png([*chunks[:-1], bad, chunks[-1]])
    expect_error(tmp_path, raw, "corrupt compressed text chunk")


def test_unreadable_avatar_on_export(tmp_path: Path) -> None:
    with pytest.raises(PersonaError, match=r"avatar .* cannot read"):
        card_png_bytes(Persona(name="A", avatar=str(tmp_path / "gone.png")))
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(PersonaError, match="avatar is not a readable image"):
        card_png_bytes(Persona(name="A", avatar=str(tmp_path / "junk.png")))
