"""One command core for every platform: Discord slash commands, Matrix ``!hearth`` and console ``/``."""

from engine.commands.core import Command, CommandContext, CommandCore, CommandResult, admin_only, manager_only

__all__ = ["Command", "CommandContext", "CommandCore", "CommandResult", "admin_only", "manager_only"]
