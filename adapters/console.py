"""The terminal chat: stdin lines in, streamed replies out.

On a terminal the reply streams token by token. When stdin is not a terminal (a pipe
or a file), each line is one message and each reply is printed whole, then a newline,
so scripts can read it. Lines starting with ``/`` are commands; the console user is
an operator (and manages its one room): it sits at the bot's machine.
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import TextIO

from adapters.presenting import present_outcome, present_result
from engine.commands.core import CommandContext
from engine.conversation import Conversation
from engine.scheduler import Admission
from engine.types import Attachment, Author, IncomingMessage, RoomRef
from errors import HearthError

CONSOLE_USER = Author(id="console", display_name="User", is_operator=True, is_room_manager=True, on_host=True)
COMMAND_PREFIX = "/"


def command_line(text: str) -> str | None:
    """The command in a console line (``/model list`` → ``model list``; a bare ``/`` is help), else None."""
    if not text.startswith(COMMAND_PREFIX):
        return None
    return text[len(COMMAND_PREFIX) :].strip() or "help"


class ConsoleAdapter:
    """Reads messages from ``stdin`` and writes replies to ``stdout``."""

    def __init__(
        self,
        conversation: Conversation,
        room_id: str = "console",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.conversation = conversation
        self.room = RoomRef("console", room_id)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        for stream in (self.stdin, self.stdout):  # invalid UTF-8 in a pipe is U+FFFD, not a crash
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(errors="replace")
        self.interactive = self.stdin.isatty()
        self._counter = 0

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    async def _read_line(self) -> str | None:
        if self.interactive:
            self._write("you> ")
        line = await asyncio.to_thread(self.stdin.readline)
        return line if line else None

    async def run(self) -> None:
        """Chat until EOF."""
        if self.interactive:
            persona = await self.conversation.persona_for(self.room)
            self._write(f"hearth: chatting with {persona.name}. /help lists commands, Ctrl-D quits.\n")
        while (line := await self._read_line()) is not None:
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            await self.handle_line(text)

    async def handle_line(self, text: str) -> None:
        """One line: a ``/`` command, else a chat message; either way shown by the shared presenter."""
        self._counter += 1
        command = command_line(text)
        if command is not None:
            ctx = CommandContext(self.room, CONSOLE_USER, progress=self._progress)
            await present_result(await self.conversation.run_command(command, ctx), self)
            return
        message = IncomingMessage(
            room=self.room, author=CONSOLE_USER, text=text, message_id=f"console-{self._counter}", addressed=True
        )
        await present_outcome(await self.conversation.handle(message), self)

    # -- the presenter's Output: everything goes to stdout ----------------------------------

    async def send_text(self, text: str, *, ephemeral: bool) -> None:
        self._write(text.rstrip() + "\n")

    async def send_table(self, text: str, *, ephemeral: bool) -> None:
        self._write(text.rstrip() + "\n")  # a terminal is monospace already

    async def send_notice(self, text: str) -> None:
        self._write(text + "\n")

    async def attach_files(self, files: tuple[Attachment, ...], *, ephemeral: bool) -> None:
        """A terminal cannot attach: name each file (the CLI's own commands write files)."""
        for file in files:
            size = len(file.data) if file.data is not None else file.size
            self._write(f"[file: {file.filename}, {size:,} bytes]\n")

    async def deliver_reply(self, admission: Admission) -> None:
        try:
            reply = await admission.ticket.reply
            # in a cast, each reply says who speaks: "Ember: …", one reply per line
            label = f"{reply.speaker.name}: " if reply.speaker is not None else ""
            if self.interactive:
                self._write(label or "bot> ")
                async for chunk in reply:
                    self._write(chunk)
                self._write("\n")
            else:
                self._write(label + (await reply.text()).strip() + "\n")
        except HearthError as exc:
            self._write(f"error: {exc}\n")

    async def _progress(self, text: str) -> None:
        self._write(text + "\n")
