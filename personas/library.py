"""The persona library: built-in personas plus the user's folders, keyed by file stem.

A broken file never breaks the library: it is listed in ``errors`` (one line each) and
the rest still load. Later folders override earlier ones, so a user can shadow a
built-in persona by dropping a file with the same name into their folder.

Layout of each folder::

    <dir>/<name>.yaml              personas (key: file stem, lowercased)
    <dir>/lorebooks/<name>.json    lorebooks (hearth JSON/YAML or SillyTavern World Info)
    <dir>/avatars/<name>.png       avatars written by imports
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from errors import PersonaError
from personas.cards import Card, card_png_bytes, export_card_json, read_card
from personas.files import slugify, write_all
from personas.images import as_png
from personas.loader import (
    LOREBOOK_SUFFIXES,
    PERSONA_SUFFIXES,
    load_lorebook_file,
    load_persona_file,
    lorebook_to_json,
    parse_persona_yaml,
    persona_to_yaml,
)
from personas.lore import Lorebook
from personas.model import Persona

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
IMPORT_SUFFIXES = (*PERSONA_SUFFIXES, ".json", ".png", ".charx")


class PersonaLibrary:
    """Loads lazily on first use; ``reload()`` re-reads every folder."""

    def __init__(self, dirs: Sequence[Path | str] = (), *, include_builtin: bool = True) -> None:
        self._dirs = ([BUILTIN_DIR] if include_builtin else []) + [Path(d) for d in dirs]
        self._personas: dict[str, Persona] | None = None
        self._books: dict[str, Lorebook] = {}
        self._errors: list[str] = []
        self._broken: dict[str, str] = {}
        self._avatars: dict[str, bytes | None] = {}

    @property
    def dirs(self) -> list[Path]:
        """Folders in load order (built-in first)."""
        return list(self._dirs)

    @property
    def errors(self) -> list[str]:
        """One line per file that failed to load (or persona naming a missing lorebook)."""
        self._ensure_loaded()
        return list(self._errors)

    def reload(self) -> None:
        """Re-read every folder; the new state replaces the old one all at once."""
        personas: dict[str, Persona] = {}
        books: dict[str, Lorebook] = {}
        errors: list[str] = []
        broken: dict[str, str] = {}  # key -> why its file did not load
        for folder in self._dirs:
            if not folder.is_dir():
                if folder == BUILTIN_DIR:  # a user folder appears with the first import
                    errors.append(f"{folder}: persona folder does not exist")
                continue
            for path in _files(folder, PERSONA_SUFFIXES):
                try:
                    personas[path.stem.lower()] = load_persona_file(path)
                except PersonaError as exc:
                    errors.append(str(exc))
                    broken[path.stem.lower()] = str(exc)
            for path in _files(folder / "lorebooks", LOREBOOK_SUFFIXES):
                try:
                    books[path.stem.lower()] = load_lorebook_file(path)
                except PersonaError as exc:
                    errors.append(str(exc))
        for persona in personas.values():
            for name in persona.lorebooks:
                if _find_book(books, name) is None:
                    errors.append(f"{persona.source}: lorebooks: unknown lorebook '{name}'")
        self._personas, self._books, self._errors = personas, books, errors
        self._broken = {key: error for key, error in broken.items() if key not in personas}
        self._avatars = {}  # a re-imported card may have a new image under the same path

    def names(self) -> list[str]:
        """Persona keys (file stems, lowercased), sorted."""
        return sorted(self._ensure_loaded())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def get(self, name: str) -> Persona:
        """A persona by key or by display name, case-insensitively."""
        persona = self._find(name)
        if persona is None and name.strip().lower() in self._broken:
            raise PersonaError(f"persona '{name}' did not load: {self._broken[name.strip().lower()]}")
        if persona is None:
            available = ", ".join(self.names()) or "none"
            raise PersonaError(f"unknown persona '{name}' (available: {available})")
        return persona

    def lorebook_names(self) -> list[str]:
        """Lorebook keys (file stems, lowercased), sorted."""
        self._ensure_loaded()
        return sorted(self._books)

    def lorebook(self, name: str) -> Lorebook:
        """A lorebook by key or by its own name, case-insensitively."""
        self._ensure_loaded()
        book = _find_book(self._books, name)
        if book is None:
            available = ", ".join(sorted(self._books)) or "none"
            raise PersonaError(f"unknown lorebook '{name}' (available: {available})")
        return book

    def lorebooks_for(self, persona: Persona) -> list[Lorebook]:
        """The persona's lorebooks in its listed order; missing ones are skipped (see ``errors``)."""
        self._ensure_loaded()
        found = (_find_book(self._books, name) for name in persona.lorebooks)
        return [book for book in found if book is not None]

    def card_lorebook(self, persona: Persona) -> Lorebook | None:
        """The persona's lorebooks as the one ``character_book`` a card holds (None without any)."""
        books = self.lorebooks_for(persona)
        if len(books) <= 1:
            return books[0] if books else None
        return Lorebook(
            name=persona.name,
            scan_depth=max(book.scan_depth for book in books),
            token_budget=max(book.token_budget for book in books),
            entries=[entry for book in books for entry in book.entries],
        )

    def avatar_png(self, persona: Persona) -> bytes | None:
        """The persona's avatar as PNG bytes (for webhooks and chat profiles), read once; None
        without one. An unreadable avatar is listed in ``errors`` once, and the character still talks."""
        if not persona.avatar:
            return None
        key = persona.avatar
        if key not in self._avatars:
            try:
                self._avatars[key] = as_png(_read_avatar(persona), persona.name)
            except PersonaError as exc:
                self._errors.append(str(exc))
                self._avatars[key] = None
        return self._avatars[key]

    def export_card(self, persona: Persona, *, png: bool) -> bytes:
        """A persona as a card: V2 JSON text, or a PNG (its avatar or a placeholder) with V2 and V3 chunks."""
        book = self.card_lorebook(persona)
        if png:
            return card_png_bytes(persona, book)
        return (json.dumps(export_card_json(persona, book), indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def save_lorebook(self, book: Lorebook, dest_dir: Path | str) -> Path:
        """Write ``book`` as hearth JSON to ``dest_dir/lorebooks/<name>.json`` and reload."""
        path = Path(dest_dir) / "lorebooks" / f"{slugify(book.name)}.json"
        write_all([(path, lorebook_to_json(book).encode("utf-8"))])
        self.reload()
        return path

    def import_file(
        self, path: Path | str, dest_dir: Path | str, *, replace: bool = True, host_files: bool = True
    ) -> Persona:
        """Import a persona YAML or a card (JSON, PNG or CHARX) into ``dest_dir``, all or nothing.

        Writes ``<slug>.yaml``, plus ``lorebooks/<slug>.json`` for an embedded lorebook and
        ``avatars/<slug>.png`` for a PNG card's image (slug: the persona name, lowercased and
        stripped to letters, digits and dashes, so it never leaves ``dest_dir``). Everything
        is validated before the first byte is written.

        ``replace=False`` refuses a slug that is taken by any persona (built-in included) or
        lorebook. ``host_files=False`` is for files that came from chat: an ``avatar:`` path
        in them names a file on the bot's machine, which must never be read, so it is dropped.
        """
        source, dest = Path(path), Path(dest_dir)
        suffix = source.suffix.lower()
        if suffix not in IMPORT_SUFFIXES:
            raise PersonaError(f"{source}: cannot import '{suffix}' files (use .yaml, .json, .png or .charx)")
        card = Card(load_persona_file(source)) if suffix in PERSONA_SUFFIXES else read_card(source)
        persona = card.persona
        slug = slugify(persona.name)
        if not replace:
            self._refuse_taken(slug, persona.name)
        if not host_files and persona.avatar:
            persona = persona.model_copy(update={"avatar": None})
        files: list[tuple[Path, bytes]] = []
        updates: dict[str, object] = {}
        if card.lorebook is not None:
            files.append((dest / "lorebooks" / f"{slug}.json", lorebook_to_json(card.lorebook).encode("utf-8")))
            updates["lorebooks"] = [*(n for n in persona.lorebooks if n.lower() != slug), slug]
        image, image_suffix = card.image, ".png"
        if image is None and persona.avatar:
            image, image_suffix = _read_avatar(persona), Path(persona.avatar).suffix.lower() or ".png"
        if image is not None:
            relative = f"avatars/{slug}{image_suffix}"
            files.append((dest / relative, image))
            updates["avatar"] = relative
        persona = persona.model_copy(update=updates)
        target = dest / f"{slug}.yaml"
        text = persona_to_yaml(persona)
        parse_persona_yaml(text, str(target), dest)  # what we write must load back
        files.append((target, text.encode("utf-8")))  # persona last: it never points at missing files
        write_all(files)
        self.reload()
        return load_persona_file(target)

    def _refuse_taken(self, slug: str, name: str) -> None:
        taken = self._find(slug) is not None or self._find(name) is not None
        if taken or slug in self._books:
            raise PersonaError(
                f"a persona or lorebook named '{slug}' already exists; an operator can overwrite it with --replace"
            )

    def _ensure_loaded(self) -> dict[str, Persona]:
        if self._personas is None:
            self.reload()
        assert self._personas is not None
        return self._personas

    def _find(self, name: str) -> Persona | None:
        personas = self._ensure_loaded()
        key = name.strip().lower()
        if key in personas:
            return personas[key]
        by_name = [p for k, p in sorted(personas.items()) if p.name.lower() == key]
        return by_name[-1] if by_name else None


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _find_book(books: dict[str, Lorebook], name: str) -> Lorebook | None:
    key = name.strip().lower()
    if key in books:
        return books[key]
    by_name = [book for k, book in sorted(books.items()) if book.name.lower() == key]
    return by_name[-1] if by_name else None


def _read_avatar(persona: Persona) -> bytes:
    assert persona.avatar is not None
    try:
        return Path(persona.avatar).read_bytes()
    except OSError as exc:
        raise PersonaError(f"{persona.source}: avatar {persona.avatar}: cannot read: {exc.strerror or exc}") from None
