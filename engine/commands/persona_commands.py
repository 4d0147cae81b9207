"""``persona list|show|set|export`` and the cast (``add|remove|cast|speak``): which characters speak in a room."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.cast import cast_changes
from engine.commands.core import Command, CommandContext, CommandResult, Right
from engine.conversation import member_named
from engine.reply import ReplyStream
from engine.scheduler import ready_admission
from engine.types import Attachment
from errors import CheckFailure, CommandError
from personas import slugify

if TYPE_CHECKING:
    from engine.conversation import Conversation
    from engine.prompting import RoomTurn
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


def cast_member(turn: RoomTurn, name: str) -> str:
    """The key of the cast member ``name`` (key or display name); CommandError naming the cast if none."""
    key = member_named(name, turn)
    if key is None:
        raise CommandError(f"{name!r} is not in this room's cast ({', '.join(k for k, _ in turn.cast)})")
    return key


def commands(conv: Conversation) -> list[Command]:
    def library_key(name: str) -> str:
        """The persona's library key (``persona add Ember`` finds ``ember``): what the cast stores."""
        wanted = conv.personas.get(name)
        return next((key for key in conv.personas.names() if conv.personas.get(key) == wanted), name.lower())

    async def list_personas(ctx: CommandContext, args: list[str]) -> str:
        speaking = {persona.name.lower() for persona in (await conv.room_turn(ctx.room)).personas}
        lines = []
        for name in conv.personas.names():
            persona = conv.personas.get(name)
            marker = "*" if persona.name.lower() in speaking else " "  # the room's persona, or its whole cast
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
        turn = await conv.room_turn(ctx.room)
        changes = cast_changes(turn.settings, [library_key(args[0])])
        await conv.store.update_room_settings(turn.conversation_id, **changes)
        greeting = persona.render_greeting(ctx.author.display_name)
        return f"persona set to {persona.name}" + (f"\n\n{greeting}" if greeting else "")

    async def cast_list(ctx: CommandContext, args: list[str]) -> str:
        turn = await conv.room_turn(ctx.room)
        return "\n".join(
            f"{key} ({persona.name}): talkativeness {persona.effective_talkativeness:g}" for key, persona in turn.cast
        )

    async def add(ctx: CommandContext, args: list[str]) -> str | CommandResult:
        key = library_key(args[0])
        persona = conv.personas.get(key)
        turn = await conv.room_turn(ctx.room)
        cast = [member for member, _ in turn.cast]
        if key in cast:
            raise CommandError(f"{persona.name} is already in this room's cast")
        await conv.store.update_room_settings(turn.conversation_id, **cast_changes(turn.settings, [*cast, key]))
        line = f"{persona.name} joins the cast ({len(cast) + 1} characters)"
        greetings = persona.group_only_greetings
        greeting = persona.render(conv.rng.choice(greetings), ctx.author.display_name) if greetings else ""
        if not greeting:
            return line
        await conv.store.append(
            turn.conversation_id, role="assistant", author_id="hearth", author_name=persona.name, text=greeting
        )
        said = ReplyStream.from_text(greeting)
        said.speaker = conv.speaker(key, persona)  # shown as the character: a webhook, a profile, "Name:"
        return CommandResult(line, reply=ready_admission(ctx.room.label, said))

    async def remove(ctx: CommandContext, args: list[str]) -> str:
        turn = await conv.room_turn(ctx.room)
        key = cast_member(turn, args[0])
        if len(turn.cast) == 1:
            raise CommandError("a room needs at least one persona: use persona set to change it")
        cast = [member for member, _ in turn.cast if member != key]
        await conv.store.update_room_settings(turn.conversation_id, **cast_changes(turn.settings, cast))
        return f"{turn.members[key].name} left the cast"

    async def speak(ctx: CommandContext, args: list[str]) -> CommandResult:
        turn = await conv.room_turn(ctx.room)
        key = cast_member(turn, args[0])
        admission = conv.scheduler.request(ctx.room.label)
        conv.plan_speaker(ctx.room, key)
        admission.ticket.requested_by.add(ctx.author.id)
        return CommandResult(f"{turn.members[key].name} speaks…", reply=admission)

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
            "change the room's persona (a cast becomes this one persona)",
            "NAME",
            right=Right.ROOM_MANAGER,
            min_args=1,
            max_args=1,
        ),
        Command(("persona", "cast"), cast_list, "the characters who speak in this room", max_args=0),
        Command(
            ("persona", "add"), add, "add a character to the room's cast", "NAME",
            right=Right.ROOM_MANAGER, min_args=1, max_args=1,
        ),
        Command(
            ("persona", "remove"), remove, "remove a character from the room's cast", "NAME",
            right=Right.ROOM_MANAGER, min_args=1, max_args=1,
        ),
        Command(
            ("persona", "speak"), speak, "ask one character of the cast to speak now", "NAME", min_args=1, max_args=1
        ),
    ]
