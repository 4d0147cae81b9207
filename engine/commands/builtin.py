"""Registers every built-in command group on a Conversation's command core."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.commands import lore_commands, memory_commands, model_commands, persona_commands, room_commands

if TYPE_CHECKING:
    from engine.conversation import Conversation


def register_builtin_commands(conversation: Conversation) -> None:
    for group in (model_commands, persona_commands, lore_commands, memory_commands, room_commands):
        conversation.commands.register(group.commands(conversation))
