"""``persona list|show|set``: which character speaks in a room."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.commands.core import Command, CommandContext, Right

if TYPE_CHECKING:
    from engine.conversation import Conversation
    from personas import Persona


def persona_tagline(persona: Persona) -> str:
    """The first line of the description (or personality), for one-line listings."""
    lines = (persona.description or persona.personality or "").strip().splitlines()
    return lines[0][:80] if lines else persona.name


def commands(conv: Conversation) -> list[Command]:
    async def list_personas(ctx: CommandContext, args: list[str]) -> str:
        current = (await conv.persona_for(ctx.room)).name.lower()
        lines = []
        for name in conv.personas.names():
            persona = conv.personas.get(name)
            marker = "*" if persona.name.lower() == current or name == current else " "
            lines.append(f"{marker} {name}: {persona_tagline(persona)}")
        for error in conv.personas.errors:
            lines.append(f"! {error}")
        return "\n".join(lines) or "no personas found"

    async def show(ctx: CommandContext, args: list[str]) -> str:
        persona = conv.personas.get(args[0]) if args else await conv.persona_for(ctx.room)
        lines = [f"name: {persona.name}"]
        for label, value in (
            ("description", persona.description),
            ("personality", persona.personality),
            ("scenario", persona.scenario),
            ("greeting", persona.greeting),
        ):
            if value:
                lines.append(f"{label}: {value.strip()[:300]}")
        lines.append(f"wake words: {', '.join(persona.effective_wake_words)}")
        if persona.model:
            switch = "" if conv.persona_models.enabled else " (ignored: engine.persona_models is off)"
            lines.append(f"preferred model: {persona.model}{switch}")
        if persona.lorebooks:
            lines.append(f"lorebooks: {', '.join(persona.lorebooks)}")
        return "\n".join(lines)

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
            ("persona", "set"),
            set_persona,
            "change the room's persona",
            "NAME",
            right=Right.ROOM_MANAGER,
            min_args=1,
            max_args=1,
        ),
    ]
