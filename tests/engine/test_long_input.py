"""A message longer than the prompt budget: a real reply that sees its beginning and end, and a notice.

Real model (SmolLM2) and a real SQLite store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from adapters.presenting import present_outcome
from engine.context import TRUNCATION_NOTE
from engine.prompting import LONG_INPUT_NOTICE
from engine.scheduler import Admission
from engine.types import Attachment, Author, IncomingMessage, RoomRef
from tests.conftest import MODELS

ROOM = RoomRef("test", "long")
ALICE = Author("u1", "Alice")
BEGINNING = "My cat is called Marmalade and she hates rain. "
END = "Question: what is my cat called?"
FILLER = "The quick brown fox jumps over the lazy dog. "
LONG = BEGINNING + FILLER * 4500 + END  # about 200 KB


@pytest_asyncio.fixture
async def long_app(tmp_path: Path, smol_path: Path) -> AsyncIterator[Any]:
    """The real model with a small window, so a prompt filled by a long message is quick to evaluate."""
    from bot import App
    from config import HearthConfig

    model = {"models_dir": str(MODELS), "n_threads": 2, "n_ctx": 768, "sampling": {"max_tokens": 24}}
    model["state_cache_dir"] = str(tmp_path / "states")
    database = {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"}
    application = App.build(
        HearthConfig.model_validate({"model": model, "database": database, "personas": {"dir": str(tmp_path)}})
    )
    await application.start()
    try:
        yield application
    finally:
        await application.close()


class Recorder:
    """An ``Output`` that records what would be shown, in order."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    async def send_text(self, text: str, *, ephemeral: bool) -> None:
        self.shown.append(("text", text))

    async def send_table(self, text: str, *, ephemeral: bool) -> None:
        self.shown.append(("table", text))

    async def send_notice(self, text: str) -> None:
        self.shown.append(("notice", text))

    async def attach_files(self, files: tuple[Attachment, ...], *, ephemeral: bool) -> None:
        self.shown.append(("files", str(len(files))))

    async def deliver_reply(self, admission: Admission) -> None:
        self.shown.append(("reply", await (await admission.ticket.reply).text()))


async def test_a_200_kb_message_gets_a_reply_and_a_notice(long_app):
    conv = long_app.conversation
    assert len(LONG.encode()) > 200_000
    outcome = await conv.handle(IncomingMessage(ROOM, ALICE, LONG, "big", addressed=True))
    assert outcome.kind == "reply" and outcome.notice == LONG_INPUT_NOTICE
    out = Recorder()
    await present_outcome(outcome, out)
    assert [kind for kind, _ in out.shown] == ["notice", "reply"], "the notice comes first, then the reply"
    assert out.shown[0][1] == LONG_INPUT_NOTICE and "\n" not in LONG_INPUT_NOTICE
    assert out.shown[1][1].strip(), "a long message must not get an empty reply"

    room = await conv.room(ROOM)
    prompt = room.last_prompt
    assert prompt is not None and prompt.truncated_newest and prompt.token_count <= prompt.budget
    newest = prompt.messages[-1].content
    assert newest.startswith(f"Alice: {BEGINNING}") and newest.endswith(END), "the reply sees beginning and end"
    assert TRUNCATION_NOTE in newest
    await conv.scheduler.wait_idle()
    stored = [m.text for m in await long_app.store.messages(room.conversation_id)]
    assert stored[0] == LONG, "the whole message stays stored"


async def test_a_long_attachment_is_read_in_part_and_a_short_message_whole(long_app):
    conv = long_app.conversation
    short = await conv.handle(IncomingMessage(ROOM, ALICE, FILLER * 3, "short", addressed=True))
    assert short.kind == "reply" and short.notice is None
    await (await short.admission.ticket.reply).text()
    await conv.scheduler.wait_idle()
    attached = IncomingMessage(
        ROOM, ALICE, "what is in this file?", "file", addressed=True, attachments=(Attachment("notes.txt", text=LONG),)
    )
    outcome = await conv.handle(attached)
    assert outcome.notice == LONG_INPUT_NOTICE
    await (await outcome.admission.ticket.reply).text()
    newest = (await conv.room(ROOM)).last_prompt.messages[-1].content
    assert "Alice: what is in this file?" in newest and newest.endswith(END)
