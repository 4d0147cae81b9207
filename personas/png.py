"""Just enough PNG to read and write character-card text chunks.

Cards hide base64 JSON in ``tEXt`` chunks. We parse chunks ourselves (signature, lengths
and CRCs checked) so a broken or hostile file fails with one clear line, and so writing
a card never re-encodes the image.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from errors import PersonaError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_TYPES = (b"tEXt", b"zTXt", b"iTXt")


@dataclass(frozen=True)
class Chunk:
    """One PNG chunk: 4-byte type and its payload."""

    type: bytes
    data: bytes


def read_chunks(raw: bytes, where: str) -> list[Chunk]:
    """Every chunk of a PNG, validated; PersonaError on any damage."""
    if not raw.startswith(PNG_SIGNATURE):
        raise PersonaError(f"{where}: not a PNG file (bad signature)")
    chunks: list[Chunk] = []
    offset = len(PNG_SIGNATURE)
    while offset < len(raw):
        if offset + 8 > len(raw):
            raise PersonaError(f"{where}: malformed PNG: truncated chunk header at byte {offset}")
        length, kind = struct.unpack(">I4s", raw[offset : offset + 8])
        end = offset + 8 + length
        if end + 4 > len(raw):
            raise PersonaError(f"{where}: malformed PNG: chunk {kind!r} runs past the end of the file")
        data = raw[offset + 8 : end]
        (crc,) = struct.unpack(">I", raw[end : end + 4])
        if zlib.crc32(kind + data) != crc:
            raise PersonaError(f"{where}: malformed PNG: bad CRC in chunk {kind.decode('latin-1')!r}")
        chunks.append(Chunk(kind, data))
        offset = end + 4
        if kind == b"IEND":
            break
    if not chunks or chunks[0].type != b"IHDR":
        raise PersonaError(f"{where}: malformed PNG: IHDR chunk missing")
    if chunks[-1].type != b"IEND":
        raise PersonaError(f"{where}: malformed PNG: IEND chunk missing (file truncated?)")
    return chunks


def _inflate(data: bytes, limit: int, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise PersonaError(f"{where}: malformed PNG: corrupt compressed text chunk") from None
    if len(out) > limit:
        raise PersonaError(f"{where}: card text chunk is too large (limit {limit // (1024 * 1024)} MB)")
    return out


def text_chunks(chunks: Iterable[Chunk], where: str, limit: int) -> dict[str, str]:
    """Keyword -> text of the tEXt/zTXt/iTXt chunks (first one wins per keyword)."""
    texts: dict[str, str] = {}
    for chunk in chunks:
        if chunk.type not in _TEXT_TYPES or b"\0" not in chunk.data:
            continue
        keyword_raw, rest = chunk.data.split(b"\0", 1)
        keyword = keyword_raw.decode("latin-1")
        if chunk.type == b"tEXt":
            text = rest.decode("latin-1")
        elif chunk.type == b"zTXt":
            text = _inflate(rest[1:], limit, where).decode("latin-1")
        else:
            if len(rest) < 2 or rest[2:].count(b"\0") < 2:
                raise PersonaError(f"{where}: malformed PNG: bad iTXt chunk {keyword!r}")
            compressed = rest[0] == 1
            _language, _translated, body = rest[2:].split(b"\0", 2)
            body = _inflate(body, limit, where) if compressed else body
            text = body.decode("utf-8", errors="replace")
        texts.setdefault(keyword, text)
    return texts


def strip_text(chunks: Iterable[Chunk]) -> list[Chunk]:
    """The chunks without any text chunk (old card data must not linger in an exported image)."""
    return [chunk for chunk in chunks if chunk.type not in _TEXT_TYPES]


def add_text(chunks: list[Chunk], keyword: str, text: str) -> list[Chunk]:
    """Insert a latin-1 tEXt chunk just before IEND."""
    chunk = Chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1"))
    return [*chunks[:-1], chunk, chunks[-1]]


def write_png(chunks: Iterable[Chunk]) -> bytes:
    """Serialize chunks into PNG bytes."""
    parts = [PNG_SIGNATURE]
    for chunk in chunks:
        crc = zlib.crc32(chunk.type + chunk.data)
        parts.append(struct.pack(">I4s", len(chunk.data), chunk.type) + chunk.data + struct.pack(">I", crc))
    return b"".join(parts)
