"""``lore list|add|remove`` and ``persona import``: world info and character cards from chat."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from engine.commands.core import Command, CommandContext, Right
from engine.prompting import room_lorebook
from errors import CheckFailure, CommandError
from personas import LoreEntry, check_macros, is_regex_key

if TYPE_CHECKING:
    from engine.conversation import Conversation

MAX_LORE_ENTRY_CHARS = 4000
MAX_IMPORT_BYTES = 20 * 1024 * 1024


def commands(conv: Conversation) -> list[Command]:
    async def lore_list(ctx: CommandContext, args: list[str]) -> str:
        turn = await conv.room_turn(ctx.room)
        persona = turn.persona
        lines = []
        for book in conv.personas.lorebooks_for(persona):
            keys = sorted({k for e in book.entries for k in e.keys})
            lines.append(
                f"{book.name} ({persona.name}'s lorebook): {len(book.entries)} entries; keys: "
                + ", ".join(keys[:15])
                + (" …" if len(keys) > 15 else "")
            )
        room_book = room_lorebook(turn.settings, turn.label)
        for number, entry in enumerate(room_book.entries, start=1):
            kind = "always" if entry.constant else ", ".join(entry.keys)
            lines.append(f"#{number} [{kind}] {entry.content[:80]}")
        return "\n".join(lines) or "no lore here; a room manager can add some: lore add KEY[,KEY…] TEXT"

    async def lore_add(ctx: CommandContext, args: list[str]) -> str:
        constant = "--constant" in args
        words = [a for a in args if a != "--constant"]
        if len(words) < 2:
            raise CommandError("usage: lore add KEY[,KEY…] TEXT [--constant]")
        keys = [k.strip() for k in words[0].split(",") if k.strip()]
        content = " ".join(words[1:]).strip()
        if not keys or not content:
            raise CommandError("lore add needs at least one key and some text")
        if len(content) > MAX_LORE_ENTRY_CHARS:
            raise CommandError(f"lore text is too long ({len(content)} characters, max {MAX_LORE_ENTRY_CHARS})")
        check_macros(content, "lore text")  # one line for a bad macro, not a crash in LoreEntry
        if not ctx.author.is_operator and any(is_regex_key(key) for key in keys):
            raise CheckFailure(
                "regex keys (/…/) run against every message and a bad one can stall the bot for every room, "
                "so only an operator may add them; use plain words"
            )
        entry = LoreEntry(keys=keys, content=content, constant=constant)
        room = await conv.room(ctx.room)
        extra = dict((await conv.store.room_settings(room.conversation_id)).extra)
        extra["lore"] = [*extra.get("lore", []), entry.model_dump(mode="json")]
        await conv.store.update_room_settings(room.conversation_id, extra=extra)
        return f"added lore #{len(extra['lore'])} for {', '.join(keys)}"

    async def lore_remove(ctx: CommandContext, args: list[str]) -> str:
        room = await conv.room(ctx.room)
        extra = dict((await conv.store.room_settings(room.conversation_id)).extra)
        entries = list(extra.get("lore", []))
        try:
            index = int(args[0].lstrip("#")) - 1
            if not 0 <= index < len(entries):
                raise ValueError
        except ValueError:
            raise CommandError(f"no lore entry {args[0]!r}; see lore list") from None
        removed = entries.pop(index)
        extra["lore"] = entries
        await conv.store.update_room_settings(room.conversation_id, extra=extra)
        return f"removed lore #{index + 1} ({', '.join(removed.get('keys', []))})"

    async def persona_import(ctx: CommandContext, args: list[str]) -> str:
        dest = conv.settings.user_persona_dir
        replace = "--replace" in args
        args = [a for a in args if a != "--replace"]
        if len(args) > 1:
            raise CommandError("usage: persona import [FILE] [--replace]")
        files = await ctx.files()
        if files:
            attachment = files[0]
            if attachment.data is None:
                raise CommandError("could not read the attached file")
            if len(attachment.data) > MAX_IMPORT_BYTES:
                raise CommandError(f"the file is too large (max {MAX_IMPORT_BYTES // 2**20} MB)")
            suffix = Path(attachment.filename).suffix.lower() or ".png"
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"card{suffix}"
                path.write_bytes(attachment.data)
                persona = conv.personas.import_file(path, dest, replace=replace, host_files=False)
        elif args and ctx.author.on_host:
            persona = conv.personas.import_file(Path(args[0]).expanduser(), dest, replace=replace)
        else:
            raise CommandError(
                "attach a character card (PNG, JSON or CHARX) or a persona YAML to the command, or reply to one with it"
            )
        return f"imported {persona.name}; use: persona set {persona.name.lower()}"

    return [
        Command(("lore", "list"), lore_list, "the lore this room's persona and the room use", max_args=0),
        Command(
            ("lore", "add"),
            lore_add,
            "add room lore, shown when a key is mentioned",
            "KEY[,KEY…] TEXT [--constant]",
            right=Right.ROOM_MANAGER,
            min_args=2,
        ),
        Command(
            ("lore", "remove"),
            lore_remove,
            "remove room lore by number",
            "N",
            right=Right.ROOM_MANAGER,
            min_args=1,
            max_args=1,
        ),
        Command(
            ("persona", "import"),
            persona_import,
            "import a character card or persona file into the shared library (--replace overwrites)",
            "[FILE on the console, else attach it or reply to it] [--replace]",
            right=Right.OPERATOR,
            max_args=2,
        ),
    ]
