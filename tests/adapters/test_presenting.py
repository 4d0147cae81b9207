"""The shared presenter's decisions: what is shown, in which form and order, for results and outcomes.

This is pure policy, so a recording ``Output`` stands in for a platform; the console, Discord
and Matrix tests check that each adapter really goes through it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.presenting import present, present_outcome, present_result
from engine.commands.core import CommandResult
from engine.conversation import Outcome
from engine.types import Attachment


class _NoFollowUp:
    """A ticket whose turn has no follow-up: the presenter only awaits ``follow_up``."""

    @property
    def follow_up(self) -> Any:
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class _Admission:
    ticket = _NoFollowUp()


ADMISSION: Any = _Admission()  # handed to deliver_reply untouched
CARD = Attachment("quill.png", "image/png", data=b"\x89PNG")


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def send_text(self, text: str, *, ephemeral: bool) -> None:
        self.calls.append(("text", text, ephemeral))

    async def send_table(self, text: str, *, ephemeral: bool) -> None:
        self.calls.append(("table", text, ephemeral))

    async def send_notice(self, text: str) -> None:
        self.calls.append(("notice", text))

    async def attach_files(self, files: tuple[Attachment, ...], *, ephemeral: bool) -> None:
        self.calls.append(("files", files, ephemeral))

    async def deliver_reply(self, admission: Any) -> None:
        self.calls.append(("reply", admission))


async def shown(answer: CommandResult | Outcome) -> list[tuple]:
    out = Recording()
    await present(answer, out)
    return out.calls


async def test_text_then_files_then_the_reply_a_command_started():
    result = CommandResult("regenerating…", ephemeral=True, files=(CARD,), reply=ADMISSION)
    assert await shown(result) == [("text", "regenerating…", True), ("files", (CARD,), True), ("reply", ADMISSION)]


async def test_a_table_keeps_its_leading_alignment_and_a_failed_one_is_plain_text():
    assert await shown(CommandResult("   name\n*  smol  \n\n", table=True)) == [("table", "   name\n*  smol", False)]
    assert await shown(CommandResult("error: no models", ok=False, table=True)) == [("text", "error: no models", False)]


async def test_empty_and_silent_results():
    assert await shown(CommandResult("  \n")) == [("text", "(done)", False)]
    assert await shown(CommandResult("slow down", ok=False, ephemeral=True, silent=True)) == []


async def test_chat_outcomes():
    assert await shown(Outcome("reply", admission=ADMISSION)) == [("reply", ADMISSION)]
    assert await shown(Outcome("joined", admission=ADMISSION)) == [], "the turn's own reply answers a joiner"
    assert await shown(Outcome("busy", notice="the queue is full")) == [("notice", "the queue is full")]
    assert await shown(Outcome("limited", notice=None, retry_after=3.0)) == []
    assert await shown(Outcome("ignored")) == []


async def test_the_two_entry_points_agree_with_present():
    out = Recording()
    await present_result(CommandResult("x", table=True), out)
    await present_outcome(Outcome("busy", notice="n"), out)
    assert out.calls == [("table", "x", False), ("notice", "n")]


async def test_each_follow_up_turn_is_delivered_in_order():
    """A cast's characters answering one message: the presenter walks the chain of follow-ups."""
    from adapters.presenting import deliver_with_follow_ups

    loop = asyncio.get_running_loop()

    class Ticket:
        def __init__(self) -> None:
            self.follow_up = loop.create_future()

    class Turn:
        def __init__(self) -> None:
            self.ticket = Ticket()

    first, second, third = Turn(), Turn(), Turn()
    first.ticket.follow_up.set_result(second)
    second.ticket.follow_up.set_result(third)
    third.ticket.follow_up.set_result(None)
    out = Recording()
    await deliver_with_follow_ups(first, out)  # type: ignore[arg-type]
    assert out.calls == [("reply", first), ("reply", second), ("reply", third)]
