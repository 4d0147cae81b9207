"""``persona list|show|set|export``: which character speaks in a room, as users see it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.commands.core import Command, CommandContext, CommandResult, Right
from engine.types import Attachment
from errors import CheckFailure, CommandError
from personas import slugify

if TYPE_CHECKING:
    from engine.conversation import Conversation
    from personas import Lorebook, Persona

LISTING_USER = "User"  # SillyTavern's default {{user}}, for text read outside a chat
MAX_SHOWN_ENTRIES = 20
ENTRY_WORDS = 8


def persona_tagline(persona: Persona, user: str = LISTING_USER) -> str:
    """The first line of the description (or personality), macros resolved, for one-line listings."""
    text = persona.render(persona.description or persona.personality or "", user)
    lines = text.strip().splitlines()
    return lines[0][:80] if lines else persona.name


def persona_line(key: str, persona: Persona, user: str = LISTING_USER) -> str:
    """``key (Display Name): tagline``: the key is what ``persona set`` takes, the name what users know."""
    return f"{key} ({persona.name}): {persona_tagline(persona, user)}"


def lorebook_lines(books: list[Lorebook]) -> list[str]:
    """Each lorebook and its entries: keys and the first words, so users see what lore exists."""
    lines: list[str] = []
    for book in books:
        lines.append(f"lorebook {book.name}: {len(book.entries)} entries")
        for entry in book.entries[:MAX_SHOWN_ENTRIES]:
            keys = "always" if entry.constant else ", ".join(entry.keys) or "(no keys)"
            words = entry.content.split()
            lines.append(f"  - [{keys}] {' '.join(words[:ENTRY_WORDS])}{' …' if len(words) > ENTRY_WORDS else ''}")
        if len(book.entries) > MAX_SHOWN_ENTRIES:
            lines.append(f"  … and {len(book.entries) - MAX_SHOWN_ENTRIES} more")
    return lines


def commands(conv: Conversation) -> list[Command]:
    async def list_personas(ctx: CommandContext, args: list[str]) -> str:
        current = (await conv.persona_for(ctx.room)).name.lower()
        lines = []
        for name in conv.personas.names():
            persona = conv.personas.get(name)
            marker = "*" if persona.name.lower() == current or name == current else " "
            lines.append(f"{marker} {persona_line(name, persona, ctx.author.display_name)}")
        for error in conv.personas.errors:
            lines.append(f"! {error}")
        return "\n".join(lines) or "no personas found"

    async def show(ctx: CommandContext, args: list[str]) -> str:
        persona = conv.personas.get(args[0]) if args else await conv.persona_for(ctx.room)
        lines = [f"name: {persona.name}"] + ([f"nickname: {persona.nickname}"] if persona.nickname else [])
        for label, value in (
            ("description", persona.description),
            ("personality", persona.personality),
            ("scenario", persona.scenario),
            ("greeting", persona.greeting),
        ):
            if value:
                lines.append(f"{label}: {persona.render(value, ctx.author.display_name)[:300]}")
        lines.append(f"wake words: {', '.join(persona.effective_wake_words)}")
        if persona.model:
            switch = "" if conv.persona_models.enabled else " (ignored: engine.persona_models is off)"
            lines.append(f"preferred model: {persona.model}{switch}")
        lines.extend(lorebook_lines(conv.personas.lorebooks_for(persona)))
        return "\n".join(lines)

    async def export(ctx: CommandContext, args: list[str]) -> CommandResult:
        as_json = "--json" in args
        names = [a for a in args if a != "--json"]
        if len(names) > 1:
            raise CommandError("usage: persona export [NAME] [--json]")
        current = await conv.persona_for(ctx.room)
        persona = conv.personas.get(names[0]) if names else current
        if persona != current and not ctx.author.is_operator:
            raise CheckFailure(
                f"only the persona speaking in this room can be exported here ({current.name}); "
                "exporting others from the shared library needs an operator"
            )
        data = conv.personas.export_card(persona, png=not as_json)
        filename = f"{slugify(persona.name)}.{'json' if as_json else 'png'}"
        card = Attachment(filename, "application/json" if as_json else "image/png", len(data), data=data)
        return CommandResult(f"{persona.name}'s character card ({filename})", files=(card,))

    async def set_persona(ctx: CommandContext, args: list[str]) -> str:
        persona = conv.personas.get(args[0])
        room = await conv.room(ctx.room)
        await conv.store.update_room_settings(room.conversation_id, persona=args[0].lower())
        greeting = persona.render_greeting(ctx.author.display_name)
        return f"persona set to {persona.name}" + (f"\n\n{greeting}" if greeting else "")

    return [
        Command(("persona", "list"), list_personas, "list the personas", max_args=0),
        Command(("persona", "show"), show, "describe the room's (or a named) persona", "[NAME]", max_args=1),
        Command(
            ("persona", "export"),
            export,
            # Anyone may export the persona speaking in the room: the bot already shows it there.
            # Other personas of the shared library may hold a creator's work nobody chose to show.
            "the room's persona as a character card (PNG, or --json); other personas: operators only",
            "[NAME] [--json]",
            max_args=2,
        ),
        Command(
            ("persona", "set"),
            set_persona,
            "change the room's persona",
            "NAME",
            right=Right.ROOM_MANAGER,
            min_args=1,
            max_args=1,
        ),
    ]
