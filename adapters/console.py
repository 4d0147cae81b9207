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

from engine.commands.core import CommandContext
from engine.conversation import Conversation
from engine.types import Author, IncomingMessage, RoomRef
from errors import HearthError

CONSOLE_USER = Author(id="console", display_name="User", is_operator=True, is_room_manager=True, on_host=True)


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
        self._counter += 1
        if text.startswith("/"):
            ctx = CommandContext(self.room, CONSOLE_USER, progress=self._progress)
            result = await self.conversation.commands.process(text[1:], ctx)
            self._write(result.text.rstrip() + "\n")
            return
        message = IncomingMessage(
            room=self.room, author=CONSOLE_USER, text=text, message_id=f"console-{self._counter}", addressed=True
        )
        outcome = await self.conversation.handle(message)
        if outcome.admission is None:
            if outcome.notice:
                self._write(outcome.notice + "\n")
            return
        try:
            reply = await outcome.admission.ticket.reply
            if self.interactive:
                self._write("bot> ")
                async for chunk in reply:
                    self._write(chunk)
                self._write("\n")
            else:
                self._write((await reply.text()).strip() + "\n")
        except HearthError as exc:
            self._write(f"error: {exc}\n")

    async def _progress(self, text: str) -> None:
        self._write(text + "\n")
