"""CHARX cards (Character Card V3): a zip with ``card.json`` at its root and embedded assets.

A CHARX comes from strangers, so the archive is checked from its directory before a byte
is inflated, and again while reading: bounded file size, entry count and uncompressed
total; no entry that compresses suspiciously well (a zip bomb), no absolute path, no
``..`` that climbs out of the folder, no symlink, no encryption. Nothing is ever
extracted to disk: only ``card.json`` and the main icon are read, into memory.

The main icon is the ``icon`` asset named ``main`` (else the first icon), whose uri is
``embeded://path/in/zip`` (the spec's spelling); it becomes the persona's avatar, and its
asset uri becomes ``ccdefault:`` (the card's own image), which is what a PNG export holds.
"""

from __future__ import annotations

import dataclasses
import io
import json
import stat
import zipfile
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from errors import PersonaError
from personas.images import as_png
from personas.png import read_chunks, strip_text, write_png

if TYPE_CHECKING:
    from personas.cards import Card

ZIP_SIGNATURE = b"PK\x03\x04"
MAX_CHARX_BYTES = 20 * 1024 * 1024  # the file as uploaded
MAX_CHARX_UNPACKED_BYTES = 64 * 1024 * 1024  # every entry inflated, as the directory declares
MAX_CHARX_ENTRIES = 512
MAX_CHARX_RATIO = 100  # inflated / compressed, for entries over MIN_RATIO_CHECK_BYTES
MIN_RATIO_CHECK_BYTES = 64 * 1024
MAX_CARD_JSON_BYTES = 2 * 1024 * 1024
MAX_ICON_BYTES = 16 * 1024 * 1024
EMBEDDED = "embeded://"  # sic: the V3 spec's spelling
DEFAULT_ASSET = "ccdefault:"


def parse_charx(raw: bytes, where: str, parse_json: Callable[[Any, str], Card]) -> Card:
    """A card from CHARX bytes; ``parse_json`` turns ``card.json`` into a Card (no import cycle)."""
    if len(raw) > MAX_CHARX_BYTES:
        raise PersonaError(f"{where}: CHARX file is too large ({len(raw) / 2**20:.1f} MB; limit 20 MB)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise PersonaError(f"{where}: not a readable CHARX (zip) file") from None
    with archive:
        entries = _checked_entries(archive, where)
        if "card.json" not in entries:
            raise PersonaError(f"{where}: CHARX has no card.json at its root")
        card_bytes = _read(archive, entries["card.json"], MAX_CARD_JSON_BYTES, where)
        try:
            data = json.loads(card_bytes.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise PersonaError(f"{where}: card.json is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise PersonaError(f"{where}: card.json: invalid JSON: {exc.msg} (line {exc.lineno})") from None
        card = parse_json(data, where)
        persona = card.persona
        icon = _main_icon(persona.assets)
        image = None
        if icon is not None and icon.uri.startswith(EMBEDDED):
            path = _normalized(icon.uri.removeprefix(EMBEDDED), where)
            if path not in entries:
                raise PersonaError(f"{where}: CHARX icon {icon.uri} is not in the archive")
            image = _icon_png(_read(archive, entries[path], MAX_ICON_BYTES, where), where)
            assets = [
                asset.model_copy(update={"uri": DEFAULT_ASSET}) if asset is icon else asset for asset in persona.assets
            ]
            persona = persona.model_copy(update={"assets": assets})
    return dataclasses.replace(card, persona=persona, image=image)


def _checked_entries(archive: zipfile.ZipFile, where: str) -> dict[str, zipfile.ZipInfo]:
    """Every file entry by its normalised path, after the directory passed every check."""
    infos = archive.infolist()
    if len(infos) > MAX_CHARX_ENTRIES:
        raise PersonaError(f"{where}: CHARX has too many entries ({len(infos)}; limit {MAX_CHARX_ENTRIES})")
    total = 0
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = _normalized(info.filename, where)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise PersonaError(f"{where}: CHARX entry {info.filename!r} is a symlink")
        if info.flag_bits & 0x1:
            raise PersonaError(f"{where}: CHARX entry {info.filename!r} is encrypted")
        total += info.file_size
        if total > MAX_CHARX_UNPACKED_BYTES:
            raise PersonaError(f"{where}: CHARX unpacks to more than {MAX_CHARX_UNPACKED_BYTES // 2**20} MB")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MIN_RATIO_CHECK_BYTES and ratio > MAX_CHARX_RATIO:
            raise PersonaError(f"{where}: CHARX entry {info.filename!r} is a zip bomb (compressed {ratio:.0f}:1)")
        if not info.is_dir():
            entries[name] = info
    return entries


def _normalized(name: str, where: str) -> str:
    """The entry's path inside the archive; absolute paths and climbing ``..`` are refused."""
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise PersonaError(f"{where}: CHARX entry {name!r} has an absolute path")
    parts: list[str] = []
    for part in PurePosixPath(text).parts:
        if part == "..":
            if not parts:
                raise PersonaError(f"{where}: CHARX entry {name!r} climbs out of the archive")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str) -> bytes:
    """An entry's bytes, never more than ``limit`` inflated, whatever its header claims."""
    if info.file_size > limit:
        raise PersonaError(f"{where}: CHARX entry {info.filename!r} is too large (limit {limit // 2**20} MB)")
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
        raise PersonaError(f"{where}: CHARX entry {info.filename!r} is unreadable ({exc})") from None
    if len(data) > limit:
        raise PersonaError(f"{where}: CHARX entry {info.filename!r} is too large (limit {limit // 2**20} MB)")
    return data


def _main_icon(assets: list[Any]) -> Any | None:
    icons = [asset for asset in assets if asset.type == "icon"]
    return next((asset for asset in icons if asset.name == "main"), icons[0] if icons else None)


def _icon_png(data: bytes, where: str) -> bytes:
    """The icon as PNG without text chunks (an old card must not hide in the avatar)."""
    return write_png(strip_text(read_chunks(as_png(data, f"{where}: icon"), f"{where}: icon")))
