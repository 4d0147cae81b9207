"""hearth's one error tree, written down in one place.

Every layer may import this leaf module (it imports nothing of hearth's), so a
memory or persona failure can be caught by the engine without translation.

HearthError
├── UserError               bad input or a refusal; its message is safe to show a user as is
│   ├── ConfigError         config file or value is wrong (carries the dotted key path)
│   ├── PersonaError        persona YAML or character card is wrong (file, line, field)
│   ├── CommandError        a command was malformed or named something unknown
│   ├── CheckFailure        a permission check refused the caller; nothing changed
│   ├── CooldownError       rate limited; `retry_after` seconds until allowed
│   └── BusyError           the reply queue is full; the message was still stored
└── InternalError           something broke inside; wraps the foreign exception as `original`
    ├── ModelError          llama-cpp or the model file failed (bad GGUF, load, generation)
    └── StorageError        the database failed

Foreign exceptions are translated where they enter (llama-cpp in the backend,
SQLAlchemy in memory, discord/nio in the adapters). Only ``bot.py`` turns errors
into exit codes; adapters turn them into one short line for the user.
"""

from __future__ import annotations


class HearthError(Exception):
    """Root of every error hearth raises on purpose."""


class UserError(HearthError):
    """The caller did something wrong or is not allowed; the message is user-safe."""


class ConfigError(UserError):
    """A config value is invalid. ``path`` is the dotted key, e.g. ``model.n_ctx``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class PersonaError(UserError):
    """A persona file or character card is malformed; nothing was imported."""


class CommandError(UserError):
    """A command was malformed, unknown, or its argument was invalid."""


class CheckFailure(UserError):
    """A permission check refused the command; no state was changed."""


class CooldownError(UserError):
    """The caller is rate limited for ``retry_after`` more seconds."""

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message or f"slow down: try again in {retry_after:.1f}s")


class BusyError(UserError):
    """The generation queue is full. The message is stored; the user should retry."""

    def __init__(self, message: str = "busy, try again in a moment") -> None:
        super().__init__(message)


class InternalError(HearthError):
    """Something failed inside hearth. ``original`` keeps the foreign exception for the log."""

    def __init__(self, message: str, original: BaseException | None = None) -> None:
        self.original = original
        super().__init__(message)


class ModelError(InternalError):
    """The model file or llama-cpp failed: a bad GGUF, a failed load, a failed generation."""


class StorageError(InternalError):
    """The database failed or is unusable."""
