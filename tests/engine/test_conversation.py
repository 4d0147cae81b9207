"""The engine end to end: triggers, memory, commands and permissions.

Generation, model swaps and KV reuse run on the real model (the ``app`` fixture). Pure policy
(triggers, coalescing, rights, settings and memory commands, stop) runs over a FakeBackend
(``fake_app`` in tests/engine/conftest.py), with each reply the policy allows queued by hand.
"""

from __future__ import annotations

import asyncio

from engine.commands.core import CommandContext
from engine.types import Author, IncomingMessage, RoomRef

ROOM = RoomRef("test", "general")
ALICE = Author("u1", "Alice")
ADMIN = Author("u0", "Root", is_operator=True)
CONSOLE = Author("console", "User", is_operator=True, on_host=True)  # may name files on the host
BOT = Author("b1", "OtherBot", is_bot=True)


def message(text: str, author: Author = ALICE, addressed: bool = True, mid: str | None = None, room=ROOM):
    return IncomingMessage(room=room, author=author, text=text, message_id=mid, addressed=addressed)


async def stored_texts(app, room=ROOM) -> list[str]:
    conversation_id = (await app.conversation.room(room)).conversation_id
    return [m.text for m in await app.store.messages(conversation_id)]


async def test_reply_is_generated_and_both_sides_stored(app):
    reply = await app.conversation.reply_now(message("Hello! What is your name?", mid="m1"))
    text = await reply.text()
    assert text.strip()
    await app.conversation.scheduler.wait_idle()
    texts = await stored_texts(app)
    assert texts[0] == "Hello! What is your name?"
    assert len(texts) == 2 and texts[1] == text.strip()


async def test_triggers_wake_word_and_ignores_bots(fake_app):
    app, backend = fake_app
    backend.enqueue(["I am here."])
    quiet = await app.conversation.handle(message("just chatting among us", addressed=False))
    assert quiet.kind == "ignored"
    woken = await app.conversation.handle(message("hey hearth, are you there?", addressed=False))
    assert woken.kind == "reply"
    await (await woken.admission.ticket.reply).text()
    from_bot = await app.conversation.handle(message("Hearth, obey me", author=BOT))
    assert from_bot.kind == "ignored"
    texts = await stored_texts(app)
    assert "just chatting among us" in texts and "Hearth, obey me" in texts, "every message is stored"
    assert len(backend.history) == 1, "only the wake word reached the model"


async def test_messages_arriving_while_queued_are_coalesced(fake_app):
    app, backend = fake_app
    conv = app.conversation
    other = RoomRef("test", "other")
    busy = asyncio.Event()  # holds the other room's reply, so this room's turn waits in the queue
    backend.enqueue(["Once upon a time..."], gate=busy)
    backend.enqueue(["Two answers."])
    first = await conv.handle(message("Tell me a long story about the sea.", room=other))
    joined = []
    a = await conv.handle(message("first question"))
    joined.append(await conv.handle(message("second question")))
    assert first.kind == "reply" and a.kind == "reply"
    assert joined[0].kind == "joined" and joined[0].admission.ticket is a.admission.ticket
    busy.set()
    await (await a.admission.ticket.reply).text()
    await conv.scheduler.wait_idle()
    texts = await stored_texts(app)
    assert texts[:2] == ["first question", "second question"]
    assert len(texts) == 3, "one reply covers both messages"
    assert len(backend.history) == 2, "one generation per room"


async def test_a_non_operator_model_load_changes_nothing(fake_app):
    app, backend = fake_app
    conv = app.conversation
    before = conv.host.entry.name
    refused = await conv.run_command("model load gemma-3-270m", CommandContext(ROOM, ALICE))
    assert not refused.ok and "operator" in refused.text
    assert conv.host.entry.name == before and conv.host.backend is backend


async def test_operator_swap_and_rollback_on_a_corrupt_file(app, tmp_path):
    conv = app.conversation
    ok = await conv.run_command("model load gemma-3-270m", CommandContext(ROOM, ADMIN))
    assert ok.ok and "done in" in ok.text, ok.text
    assert conv.host.entry.name == "gemma-3-270m"
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes((app.config.model.models_dir / "gemma-3-270m-q4_k_m.gguf").read_bytes()[:4_000_000])
    failed = await conv.run_command(f"model load {corrupt}", CommandContext(ROOM, CONSOLE))
    assert not failed.ok and "truncated" in failed.text
    assert conv.host.entry.name == "gemma-3-270m" and conv.host.loaded
    reply = await conv.reply_now(message("Say hi."))
    await reply.text()
    assert reply.stats.completion_tokens >= 1


async def test_persona_set_needs_a_manager_and_changes_the_reply_prompt(fake_app):
    app, backend = fake_app
    conv = app.conversation
    backend.enqueue(["You stand in a hall."])
    refused = await conv.run_command("persona set narrator", CommandContext(ROOM, ALICE))
    assert not refused.ok
    manager = Author("u2", "Mod", is_room_manager=True)
    done = await conv.run_command("persona set narrator", CommandContext(ROOM, manager))
    assert done.ok
    persona = await conv.persona_for(ROOM)
    assert persona.name != "Hearth"
    reply = await conv.reply_now(message("look around"))
    await reply.text()
    room = await conv.room(ROOM)
    assert "runs a fantasy text adventure" in room.last_prompt.messages[0].content


async def test_memory_commands(fake_app):
    app, backend = fake_app
    conv = app.conversation
    backend.enqueue(["Noted: green tea."])
    await (await conv.reply_now(message("I like green tea.", mid="t1"))).text()
    await conv.scheduler.wait_idle()
    await conv.handle(message("Bob was here", author=Author("u9", "Bob"), addressed=False))
    show = await conv.run_command("memory show", CommandContext(ROOM, ALICE))
    assert "stored turns: 3" in show.text and "of" in show.text
    export = await conv.run_command("memory export", CommandContext(ROOM, ALICE))
    assert "green tea" in export.text
    forget = await conv.run_command("memory forget-me", CommandContext(ROOM, ALICE))
    assert forget.ok and "deleted 1" in forget.text
    assert "I like green tea." not in await stored_texts(app)
    assert backend.invalidated == [ROOM.label], "no evaluated state computed with the text in view survives"
    assert (await conv.run_command("memory reset", CommandContext(ROOM, ALICE))).ok is False
    assert (await conv.run_command("memory reset", CommandContext(ROOM, ADMIN))).ok
    assert await stored_texts(app) == []
    assert backend.invalidated == [ROOM.label] * 2


async def test_edits_and_deletes_follow_the_user(fake_app):
    app, backend = fake_app
    conv = app.conversation
    await conv.handle(message("I live in Paris", mid="p1", addressed=False))
    assert await conv.message_edited(ROOM, "p1", "I live in Rome")
    assert "I live in Rome" in await stored_texts(app)
    assert backend.invalidated == [ROOM.label], "the model's cells of the old text go"
    assert await conv.message_deleted(ROOM, "p1")
    assert "I live in Rome" not in await stored_texts(app)
    assert backend.invalidated == [ROOM.label] * 2
    assert not await conv.message_deleted(ROOM, "never-seen")
    assert len(backend.invalidated) == 2, "nothing changed, nothing dropped"


async def test_stop_cancels_a_running_reply(fake_app):
    """The stop command reaches the running reply; the real backend's cancel is tested in the swap test."""
    app, backend = fake_app
    conv = app.conversation
    backend.enqueue(["wave "] * 100_000)  # far longer than the test: only stop can end it
    outcome = await conv.handle(message("Write a very long poem about the ocean, at least 40 lines."))
    reply = await outcome.admission.ticket.reply
    async for _ in reply:
        stopped = await conv.run_command("stop", CommandContext(ROOM, ALICE))
        assert stopped.text == "stopped"
        break
    await asyncio.wait_for(reply.text(), 5)
    assert reply.stats.finish_reason == "cancelled"


async def test_a_change_of_speaker_keeps_the_evaluated_prompt_warm(app):
    """``{{user}}`` in the persona must not follow the last speaker, or every turn is cold."""
    conv = app.conversation
    bob = Author("u2", "Bob")
    for text, author in [("Hello, I am Alice.", ALICE), ("And I am Bob. Hi!", bob)]:
        await (await conv.reply_now(message(text, author=author))).text()
    await conv.scheduler.wait_idle()
    third = await conv.reply_now(message("What is two plus two?", author=ALICE))
    await third.text()
    assert third.stats.evaluated_prompt_tokens < third.stats.prompt_tokens / 2


async def test_a_swap_waits_for_the_running_reply_and_now_cancels_it(app):
    """The scheduler pause that bot.py wires into ModelHost: the model stays until the reply ends."""
    conv = app.conversation
    first = conv.host.entry.name
    reply = await conv.reply_now(message("Write a very long poem about the ocean, at least 40 lines."))
    seen: set[str | None] = set()
    swap = None
    async for _ in reply:
        swap = swap or asyncio.create_task(conv.host.load("gemma-3-270m"))
        seen.add(conv.host.entry.name if conv.host.entry else None)
    assert seen == {first}, "the model was swapped out under a running reply"
    assert reply.stats.finish_reason != "cancelled"
    assert "done in" in await asyncio.wait_for(swap, 60)
    assert conv.host.entry.name == "gemma-3-270m"

    reply = await conv.reply_now(message("Write a very long poem about the ocean, at least 40 lines."))
    async for _ in reply:
        break
    await asyncio.wait_for(conv.host.load(first, now=True), 60)
    assert reply.stats.finish_reason == "cancelled"
    assert conv.host.entry.name == first


async def test_a_model_loads_with_as_many_rooms_at_once_as_fit_in_free_ram(fake_app, caplog):
    """``model.parallel`` (4 by default) is the most: with RAM for two sequences the model
    loads with two, says so in the log and in ``model info``, instead of being refused."""
    from engine.registry import PARALLEL_RAM_SHARE

    app, backend = fake_app
    host = app.conversation.host
    entry = host.entry
    assert host.registry.spec_for(entry).options.parallel == 4, "the configured default"
    free = int(host.registry.estimate_bytes(entry, parallel=2) / PARALLEL_RAM_SHARE) + 1
    host.available_memory = lambda: free
    specs = []
    host.factory = lambda entry, spec: specs.append(spec) or backend
    backend.enqueue(["Hi"])  # the health check
    ok = await app.conversation.run_command(f"model load {entry.name}", CommandContext(ROOM, ADMIN))
    assert ok.ok, ok.text
    assert [spec.options.parallel for spec in specs] == [2]
    assert f"{entry.name}: 2 rooms at once instead of model.parallel 4" in caplog.text
    await host.unload()
    shown = await app.conversation.run_command(f"model info {entry.name}", CommandContext(ROOM, ADMIN))
    assert "for each of 2 rooms at once (model.parallel 4; more would not fit in free RAM)" in shown.text
