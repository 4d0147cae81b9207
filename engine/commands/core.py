"""Parse, check and dispatch commands, defined once and served everywhere.

A command is a path of words (``persona set``), a callback, and plain predicate checks.
The same text ``persona set storyteller`` arrives from a slash command, ``!hearth`` or a
console ``/`` line. Checks run before the callback, so a refused command changes nothing.
"""

from __future__ import annotations

import enum
import logging
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from engine.scheduler import Admission
from engine.types import Attachment, Author, RoomRef
from errors import CheckFailure, CommandError, HearthError, UserError

log = logging.getLogger(__name__)

MAX_COMMAND_LENGTH = 4000


@dataclass
class CommandContext:
    """Who runs a command, where, and how to tell them about progress.

    ``progress`` lets a long command (a model load) report "loading…" before it ends;
    adapters pass their own sender, and the default drops the message. ``fetch_files``
    gets files the command points at rather than carries (on Matrix, the file event it
    replies to); it runs only when a command asks, after its checks passed, so nobody
    can make the bot download files with a command they may not run.
    """

    room: RoomRef
    author: Author
    attachments: tuple[Attachment, ...] = ()
    progress: Callable[[str], Awaitable[None]] | None = None
    fetch_files: Callable[[], Awaitable[tuple[Attachment, ...]]] | None = None

    async def report(self, text: str) -> None:
        if self.progress is not None:
            await self.progress(text)

    async def files(self) -> tuple[Attachment, ...]:
        """The files attached to the command, else those it points at."""
        if self.attachments or self.fetch_files is None:
            return self.attachments
        return await self.fetch_files()


@dataclass(frozen=True)
class CommandResult:
    """What a command produced; every adapter presents it the same way (``adapters/presenting``).

    ``ephemeral`` output is shown only to the caller where possible. ``table`` is aligned
    monospace output (proportional fonts would scramble its columns). ``reply`` is a reply
    the command started (``regenerate``): the adapter streams it after the text. ``files``
    go with the answer as attachments. ``silent`` says show nothing at all: a rate-limited
    caller who was already told so in this period.
    """

    text: str
    ok: bool = True
    ephemeral: bool = False
    table: bool = False
    reply: Admission | None = None
    files: tuple[Attachment, ...] = ()
    silent: bool = False


Check = Callable[[CommandContext], bool]
Callback = Callable[[CommandContext, list[str]], Awaitable[str | CommandResult]]


class Right(enum.Enum):
    """Who may run a command. ``help`` shows the label; a refusal names it."""

    EVERYONE = ""
    ROOM_MANAGER = "room manager"
    OPERATOR = "operator"

    def allows(self, author: Author) -> bool:
        if self is Right.OPERATOR:
            return author.is_operator
        if self is Right.ROOM_MANAGER:
            return author.manages_room
        return True

    def refusal(self, command: str) -> str:
        if self is Right.OPERATOR:
            return f"'{command}' changes the bot for every room, so it needs an operator (named in the bot's config)"
        return f"'{command}' needs a room manager here (or an operator)"


@dataclass(frozen=True)
class Command:
    """``path`` is the words that name it; ``usage`` documents the arguments.

    ``right`` is who may run it; ``checks`` are extra predicates, each refused with ``refusal``.
    """

    path: tuple[str, ...]
    callback: Callback
    help: str
    usage: str = ""
    right: Right = Right.EVERYONE
    checks: tuple[Check, ...] = ()
    min_args: int = 0
    max_args: int | None = None
    refusal: str = "you are not allowed to do that here"

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def privileged(self) -> bool:
        """Output of commands that need a right is shown to the caller only, where possible."""
        return self.right is not Right.EVERYONE or bool(self.checks)


def tokenize(text: str) -> list[str]:
    """Split a command line into words, honouring double quotes. Pure, so tests need no adapter.

    Apostrophes are ordinary letters: chat text is full of them (``memory search what's my
    cat``), and an unmatched one must not make a command unparseable.
    """
    if len(text) > MAX_COMMAND_LENGTH:
        raise CommandError(f"command is too long ({len(text)} characters, max {MAX_COMMAND_LENGTH})")
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.quotes = '"'  # only double quotes group words: "what's my cat" is free text, not a quote
    lexer.commenters = ""  # '#' is text (a channel, a hashtag), never the start of a comment
    try:
        return list(lexer)
    except ValueError as exc:
        raise CommandError(f"could not parse command: {exc}") from None


@dataclass
class CommandCore:
    """The registry and dispatcher."""

    commands: dict[tuple[str, ...], Command] = field(default_factory=dict)

    def add(self, command: Command) -> None:
        if command.path in self.commands:
            raise ValueError(f"command {command.name!r} is registered twice")
        self.commands[command.path] = command

    def register(self, commands: Sequence[Command]) -> None:
        for command in commands:
            self.add(command)

    def find(self, words: Sequence[str]) -> tuple[Command, list[str]]:
        """The longest registered path that prefixes ``words``, and the remaining arguments."""
        lowered = [w.lower() for w in words]
        for size in range(min(len(words), 3), 0, -1):
            command = self.commands.get(tuple(lowered[:size]))
            if command is not None:
                return command, list(words[size:])
        group = [c.name for c in self.commands.values() if lowered and c.path[0] == lowered[0]]
        if group:
            raise CommandError(f"unknown command {' '.join(words[:2])!r}; try: {', '.join(sorted(group))}")
        raise CommandError(f"unknown command {' '.join(words[:1])!r}; try 'help'")

    async def process(self, text: str, ctx: CommandContext) -> CommandResult:
        """Run one command line; every failure becomes a one-line result, never a traceback."""
        try:
            words = tokenize(text.strip())
            if not words:
                raise CommandError("empty command; try 'help'")
            command, args = self.find(words)
            if not command.right.allows(ctx.author):
                raise CheckFailure(command.right.refusal(command.name))
            for check in command.checks:
                if not check(ctx):
                    raise CheckFailure(command.refusal)
            if len(args) < command.min_args or (command.max_args is not None and len(args) > command.max_args):
                raise CommandError(f"usage: {command.name} {command.usage}".rstrip())
            result = await command.callback(ctx, args)
        except UserError as exc:
            return CommandResult(str(exc), ok=False, ephemeral=True)
        except HearthError as exc:
            log.warning("command %r failed: %s", text[:80], exc, exc_info=getattr(exc, "original", None))
            return CommandResult(f"error: {exc}", ok=False, ephemeral=True)
        except Exception:
            log.exception("command %r crashed", text[:80])
            return CommandResult("error: the command failed unexpectedly (details are in the log)", ok=False)
        if isinstance(result, CommandResult):
            return result
        return CommandResult(result, ephemeral=command.privileged)

    def help_text(self, ctx: CommandContext | None = None) -> str:
        lines = []
        for command in sorted(self.commands.values(), key=lambda c: c.path):
            marker = f" ({command.right.value})" if command.right.value else ""
            lines.append(f"{command.name} {command.usage}".rstrip() + f" — {command.help}{marker}")
        return "\n".join(lines)
