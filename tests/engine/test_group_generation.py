"""A cast on the real model: two characters answer in one console room, each under its own name,
from prompts that differ only where their cards do."""

from __future__ import annotations

from dataclasses import replace

from engine.commands.core import CommandContext
from engine.types import Author, IncomingMessage, RoomRef
from tests.conftest import run_bot

ROOM = RoomRef("console", "tavern")
OWNER = Author("console", "User", is_operator=True, on_host=True)


async def cast_hearth_and_ember(conv) -> None:
    ctx = CommandContext(ROOM, OWNER)
    for line in ("persona set assistant", "persona add companion"):
        assert (await conv.run_command(line, ctx)).ok


def test_two_characters_answer_in_one_console_room(config_file, smol_path):
    lines = "/persona set assistant\n/persona add companion\n/settings set group_replies 2\nHello Hearth and Ember!\n"
    result = run_bot("chat", "--config", str(config_file()), "--room", "tavern", stdin=lines)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    replies = [line for line in result.stdout.splitlines() if line.startswith(("Hearth: ", "Ember: "))]
    assert [line.split(":")[0] for line in replies] == ["Hearth", "Ember"], result.stdout
    assert all(line.split(": ", 1)[1].strip() for line in replies), "each character said something"


async def test_cast_prompts_differ_only_where_the_cards_do(app):
    conv = app.conversation
    await cast_hearth_and_ember(conv)
    alice = Author("u1", "Alice")
    reply = await conv.reply_now(IncomingMessage(ROOM, alice, "Hearth, what is on the menu?", addressed=True))
    await reply.text()
    await conv.scheduler.wait_idle()
    await conv.remember(IncomingMessage(ROOM, alice, "And Ember, what do you think?"))
    turn = await conv.room_turn(ROOM)
    backend = app.host.require()
    prompts = {}
    for _, persona in turn.cast:
        built = await conv.prompts.build(backend, replace(turn, persona=persona), "Alice", 48)
        prompts[persona.name] = built.messages
    hearth, ember = prompts["Hearth"], prompts["Ember"]
    assert len(hearth) == len(ember)
    differing = [i for i, (a, b) in enumerate(zip(hearth, ember, strict=True)) if a != b]
    assert hearth[0].role == "system" and 0 in differing, "each character's card is its own system text"
    for i in differing[1:]:
        assert hearth[i].role == "system", f"message {i} ({hearth[i].role}) differs: only the volatile nudge may"
        assert hearth[i].content.replace("Hearth", "Ember") == ember[i].content
    talk = [m for m in hearth if m.role != "system"]
    assert any(m.role == "assistant" and m.content.startswith("Hearth: ") for m in talk), "lines carry their speaker"
    assert "Hearth, Ember" in hearth[0].content and "Hearth, Ember" in ember[0].content, "the member list"


async def test_idle_warmup_keeps_the_next_speaker_warm(app):
    """After Hearth speaks, the idle room evaluates Ember's prompt too: her turn then evaluates only
    the new message, though she never spoke before (engine.cast_warmup)."""
    conv = app.conversation
    await cast_hearth_and_ember(conv)
    alice = Author("u1", "Alice")
    first = await conv.reply_now(IncomingMessage(ROOM, alice, "Hearth, name a color.", addressed=True))
    await first.text()
    await conv.scheduler.wait_idle()  # the warm-up runs here, as background work
    second = await conv.reply_now(IncomingMessage(ROOM, alice, "Ember, and yours?", addressed=True))
    await second.text()
    assert second.speaker is not None and second.speaker.name == "Ember"
    assert second.stats.prompt_tokens > 200, "her whole prompt (card, history) is long"
    assert second.stats.evaluated_prompt_tokens < 60, second.stats
