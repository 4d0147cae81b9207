"""Presenting what the engine decided, written once for the console, Discord and Matrix.

A command gives a ``CommandResult`` (text, maybe a table, files, a follow-up reply) and a
chat message gives an ``Outcome`` (a reply to stream, or a notice). Which of these to show,
and in what order, is decided here; how to show each one is the platform's business, so
every adapter implements the small ``Output`` protocol and calls ``present`` (or
``present_result``/``present_outcome``). A new kind of output is added here and in each ``Output``, nowhere else.
"""

from __future__ import annotations

from typing import Protocol

from engine.commands.core import CommandResult
from engine.conversation import Outcome
from engine.scheduler import Admission
from engine.types import Attachment

EMPTY_RESULT = "(done)"


class Output(Protocol):
    """One answer's destination: a console, a Discord interaction or message, a Matrix event."""

    async def send_text(self, text: str, *, ephemeral: bool) -> None:
        """Plain command output (``ephemeral``: only the caller should see it, where possible)."""

    async def send_table(self, text: str, *, ephemeral: bool) -> None:
        """Aligned output that needs a monospace font to keep its columns."""

    async def send_notice(self, text: str) -> None:
        """A short line about a chat message: why it gets no reply (busy, rate limited), or that
        its reply saw only part of it (too long to read whole)."""

    async def attach_files(self, files: tuple[Attachment, ...], *, ephemeral: bool) -> None:
        """Files that belong to the answer just sent."""

    async def deliver_reply(self, admission: Admission) -> None:
        """Stream a reply the scheduler admitted, once its turn comes."""


async def present_result(result: CommandResult, out: Output) -> None:
    """Show a command's result: its text (a table if flagged), its files, then its reply."""
    if result.silent:
        return  # rate limited and already told so: say nothing
    text = result.text.strip("\n").rstrip() or EMPTY_RESULT  # leading spaces may align a table's first row
    if result.table and result.ok:
        await out.send_table(text, ephemeral=result.ephemeral)
    else:
        await out.send_text(text, ephemeral=result.ephemeral)
    if result.files:
        await out.attach_files(result.files, ephemeral=result.ephemeral)
    if result.reply is not None:
        await deliver_with_follow_ups(result.reply, out)


async def present_outcome(outcome: Outcome, out: Output) -> None:
    """Show the engine's answer to a chat message: a new reply, a notice, or nothing.

    A message that joined a waiting turn (``joined``) gets no reply of its own: the turn's
    reply, already being presented for the message that started it, answers both.
    """
    if outcome.kind == "reply" and outcome.admission is not None:
        if outcome.notice:
            await out.send_notice(outcome.notice)
        await deliver_with_follow_ups(outcome.admission, out)
    elif outcome.notice:
        await out.send_notice(outcome.notice)


async def deliver_with_follow_ups(admission: Admission, out: Output) -> None:
    """Stream the admitted reply, then each turn chained after it: the other characters of a
    cast who answer the same message, one after another. The engine ends the chain (a user
    speaking stops it), and the scheduler resolves every ticket's follow-up, so this ends."""
    next_admission: Admission | None = admission
    while next_admission is not None:
        await out.deliver_reply(next_admission)
        next_admission = await next_admission.ticket.follow_up


async def present(answer: CommandResult | Outcome, out: Output) -> None:
    """Either of the above, for adapters that hand both to one task."""
    if isinstance(answer, CommandResult):
        await present_result(answer, out)
    else:
        await present_outcome(answer, out)


__all__ = ["Output", "deliver_with_follow_ups", "present", "present_outcome", "present_result"]
