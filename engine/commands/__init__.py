"""One command core for every platform: Discord slash commands, Matrix ``!hearth`` and console ``/``."""

from engine.commands.core import Command, CommandContext, CommandCore, CommandResult, Right

__all__ = ["Command", "CommandContext", "CommandCore", "CommandResult", "Right"]
