"""One command core for every platform: Discord slash commands, Matrix ``!hearth`` and console ``/``."""

from engine.commands.core import (
    Command,
    CommandContext,
    CommandCore,
    CommandResult,
    Right,
    manager_only,
    operator_only,
)

__all__ = ["Command", "CommandContext", "CommandCore", "CommandResult", "Right", "manager_only", "operator_only"]
