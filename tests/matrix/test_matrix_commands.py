"""``!hearth`` commands presented in a real Synapse room: tables, follow-up replies and files.

Everything goes through the shared presenter (``adapters/presenting.py``) and the Matrix
``Output``; the bot runs the real SmolLM2 model, and a second nio client plays the user.
"""

from __future__ import annotations

from typing import Any

import pytest
from nio import AsyncClient, MemoryDownloadResponse

from adapters.matrix_adapter import command_line
from adapters.rendering import UNFINISHED_MARKER
from engine.commands.core import Command, CommandContext, CommandResult
from engine.types import Attachment

from .harness import collect_events, is_edit, relation, send_text, skip_seen
from .test_matrix_bot import _answers, from_bot, group_room, mention, reply_events

pytestmark = pytest.mark.timeout(240)


def test_command_line_takes_the_configured_prefix_only():
    assert command_line("!hearth model list", "!hearth") == "model list"
    assert command_line("  !HEARTH   stats ", "!hearth") == "stats"
    assert command_line("!hearth", "!hearth") == "help"
    assert command_line("!hearthy hello", "!hearth") is None, "a longer word is chat"
    assert command_line("hello !hearth stats", "!hearth") is None
    assert command_line("!hearth stats", "") is None


def relation_of(source: dict[str, Any]) -> dict[str, Any]:
    return source.get("content", {}).get("m.relates_to", {})


async def answers_to(user: AsyncClient, room_id: str, bot_id: str, sent: str) -> list[dict[str, Any]]:
    """The bot's events answering ``sent`` up to its first notice."""
    return await collect_events(user, room_id, lambda e: _answers(e, bot_id, sent), timeout=60)


async def test_command_table_regenerate_and_files_in_a_room(matrix_bot, matrix_user):
    alice, bob = await matrix_user("alice"), await matrix_user("bob")
    bot = await matrix_bot()
    room_id = await group_room(alice, bot, [bob])
    conversation = bot.app.conversation

    # a table: monospace HTML, so the columns survive a proportional font
    listing = await send_text(alice, room_id, "!hearth model list")
    table = (await answers_to(alice, room_id, bot.user_id, listing))[-1]["content"]
    assert table["msgtype"] == "m.notice" and "smollm2-135m-instruct" in table["body"]
    assert table["formatted_body"].startswith("<pre><code>"), "a table must be preformatted"
    stats = await send_text(alice, room_id, "!hearth stats")
    plain = (await answers_to(alice, room_id, bot.user_id, stats))[-1]["content"]
    assert "uptime:" in plain["body"] and "<pre>" not in plain.get("formatted_body", ""), "plain text is not a table"

    # regenerate: the notice, then the new reply streamed as an answer to the command
    question = await send_text(alice, room_id, f"{bot.user_id}: name a fruit", **mention(bot.user_id))
    await reply_events(alice, room_id, bot.user_id, question)
    await conversation.scheduler.wait_idle()
    skip_seen(alice, room_id)
    again = await send_text(alice, room_id, "!hearth regenerate")
    notices: dict[str, str] = {}  # the harness may show an event more than once
    firsts: set[str] = set()

    def regenerated(event: Any) -> bool:
        if not from_bot(bot.user_id)(event):
            return False
        content = event.source["content"]
        if is_edit(event):
            done = not content["m.new_content"]["body"].endswith(UNFINISHED_MARKER)
            return relation(event).get("event_id") in firsts and done
        if not _answers(event, bot.user_id, again):
            return False
        if content["msgtype"] == "m.notice":
            notices[event.source["event_id"]] = content["body"]
            return False
        firsts.add(event.source["event_id"])
        return not content["body"].endswith(UNFINISHED_MARKER)

    await collect_events(alice, room_id, regenerated, timeout=90)
    assert list(notices.values()) == ["regenerating…"] and firsts, "the new reply must follow the notice"
    await conversation.scheduler.wait_idle()

    # files: uploaded and sent as m.file events answering the command
    card = Attachment("quill.json", "application/json", data=b'{"spec": "chara_card_v2"}')

    async def export(ctx: CommandContext, args: list[str]) -> CommandResult:
        return CommandResult("here is the card", files=(card,))

    conversation.commands.add(Command(("card", "demo"), export, "a test command with a file"))
    skip_seen(alice, room_id)
    asked = await send_text(alice, room_id, "!hearth card demo")
    events = await collect_events(
        alice, room_id, lambda e: _answers(e, bot.user_id, asked) and e.source["content"]["msgtype"] == "m.file"
    )
    answers = [e["content"] for e in events if relation_of(e).get("m.in_reply_to", {}).get("event_id") == asked]
    assert [a["body"] for a in answers] == ["here is the card", "quill.json"]
    file = answers[-1]
    assert file["info"] == {"mimetype": "application/json", "size": len(card.data)}
    download = await alice.download(file["url"])
    assert isinstance(download, MemoryDownloadResponse) and download.body == card.data
