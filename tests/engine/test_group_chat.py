"""A cast in one room, through the real engine (SQLite, personas, commands) over a FakeBackend.

The FakeBackend's tokens are characters, so ``prompt_text`` reads back the prompt each character got.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.presenting import deliver_with_follow_ups
from engine.commands.core import CommandContext
from engine.scheduler import Admission
from engine.types import Author, IncomingMessage, RoomRef

ROOM = RoomRef("test", "tavern")
ALICE = Author("u1", "Alice")
MANAGER = Author("m1", "Mod", is_room_manager=True)


@pytest_asyncio.fixture
async def fake_app(fake_apps):
    """Rate limits off: these tests send many commands and messages in a few milliseconds."""
    return await fake_apps(limits={"user_messages_per_minute": 0, "room_replies_per_minute": 0})


def message(text: str, *, addressed: bool = True, replied_to: str | None = None, author: Author = ALICE):
    return IncomingMessage(ROOM, author, text, addressed=addressed, replied_to=replied_to)


def prompt_text(request) -> str:
    return "".join(chr(token) for token in request.prompt_tokens)


async def run(app, line: str, author: Author = MANAGER):
    return await app.conversation.run_command(line, CommandContext(ROOM, author))


class Recorder:
    """An adapter Output that records who said what, in order."""

    def __init__(self) -> None:
        self.replies: list[tuple[str | None, str]] = []

    async def deliver_reply(self, admission: Admission) -> None:
        reply = await admission.ticket.reply
        self.replies.append((reply.speaker.name if reply.speaker else None, await reply.text()))


async def answers(app, text: str) -> Recorder:
    """Send ``text`` and deliver its reply with every follow-up it brings (other characters)."""
    out = Recorder()
    await deliver_with_follow_ups((await app.conversation.handle(message(text))).admission, out)
    return out


async def cast_of_two(app, *, replies: int = 1, chain: int = 0) -> None:
    app.conversation.rng = random.Random(7)
    assert (await run(app, "persona set assistant")).ok
    result = await run(app, "persona add companion")
    assert result.ok, result.text
    for key, value in (("group_replies", replies), ("group_chain", chain)):
        assert (await run(app, f"settings set {key} {value}")).ok


async def conversation_id(app) -> int:
    return (await app.conversation.room(ROOM)).conversation_id


async def test_cast_commands_and_a_single_named_speaker(fake_app):
    app, backend = fake_app
    await cast_of_two(app)
    cast = await run(app, "persona cast")
    assert "assistant (Hearth)" in cast.text and "companion (Ember)" in cast.text
    assert "cast: Hearth, Ember" in (await run(app, "memory show")).text
    backend.enqueue(["Ember: Warm ", "greetings."])
    out = await answers(app, "Ember, how are you?")
    assert out.replies == [("Ember", "Warm greetings.")], "the named character answers, its own label dropped"
    assert backend.history[-1].room_key == "test:tavern#companion", "each character keeps its own cached state"
    stored = await app.store.messages(await conversation_id(app))
    assert (stored[-1].author_name, stored[-1].text) == ("Ember", "Warm greetings.")
    assert "This is a group chat with several characters: Hearth, Ember." in prompt_text(backend.history[-1])


async def test_group_replies_lets_several_characters_answer_one_message(fake_app):
    app, backend = fake_app
    await cast_of_two(app, replies=2)
    backend.enqueue(["first"])
    backend.enqueue(["second"])
    out = await answers(app, "Hello, Hearth and Ember!")
    assert out.replies == [("Hearth", "first"), ("Ember", "second")]
    second_prompt = prompt_text(backend.history[-1])
    assert "Hearth: first" in second_prompt, "the second speaker sees the first one's reply, with its name"
    assert "[Write the next reply only as Ember.]" in second_prompt


async def test_group_chain_stops_at_its_cap(fake_app):
    app, backend = fake_app
    await cast_of_two(app, replies=1, chain=2)
    for text in ("one", "two", "three", "four"):
        backend.enqueue([text])
    out = await answers(app, "Hearth, start a story")
    assert [text for _, text in out.replies] == ["one", "two", "three"], "one answer plus a chain of two"
    assert [name for name, _ in out.replies] == ["Hearth", "Ember", "Hearth"], "characters take turns"


async def test_a_user_message_stops_a_chain(fake_app):
    app, backend = fake_app
    await cast_of_two(app, replies=1, chain=5)
    gate = asyncio.Event()
    backend.enqueue(["one"])
    backend.enqueue(["two"], gate=gate)  # the chain's first follow-up waits here
    backend.enqueue(["answer to Bob"])
    out = Recorder()
    first = await app.conversation.handle(message("Hearth, tell us a tale"))
    delivery = asyncio.create_task(deliver_with_follow_ups(first.admission, out))
    while len(backend.history) < 2:
        await asyncio.sleep(0.01)
    interrupt = await app.conversation.handle(message("Wait, Ember!", author=Author("u2", "Bob")))
    assert (await run(app, "settings set group_chain 0")).ok  # Bob's message would start a chain of its own
    gate.set()
    await delivery
    assert [text for _, text in out.replies] == ["one", "two"], "the chain ended when Bob spoke"
    assert interrupt.kind == "reply"
    own = Recorder()
    await deliver_with_follow_ups(interrupt.admission, own)
    assert own.replies == [("Ember", "answer to Bob")]
    await app.conversation.scheduler.wait_idle()
    assert len(backend.history) == 3, "nothing more was generated"


async def test_reply_to_a_character_and_persona_speak_pick_that_character(fake_app):
    app, backend = fake_app
    await cast_of_two(app)
    backend.enqueue(["from Ember"])
    out = Recorder()
    outcome = await app.conversation.handle(message("and you?", addressed=False, replied_to="Ember"))
    assert outcome.kind == "reply", "a reply to a character's message addresses it"
    await deliver_with_follow_ups(outcome.admission, out)
    backend.enqueue(["from Hearth"])
    spoken = await run(app, "persona speak Hearth", author=ALICE)
    assert spoken.ok and spoken.reply is not None
    await deliver_with_follow_ups(spoken.reply, out)
    assert out.replies == [("Ember", "from Ember"), ("Hearth", "from Hearth")]
    refused = await run(app, "persona speak Narrator", author=ALICE)
    assert not refused.ok and "not in this room's cast" in refused.text


async def test_character_names_wake_the_room(fake_app):
    app, backend = fake_app
    await cast_of_two(app)
    assert (await app.conversation.handle(message("nice weather", addressed=False))).kind == "ignored"
    backend.enqueue(["yes?"])
    woken = await app.conversation.handle(message("ember, are you there", addressed=False))
    assert woken.kind == "reply"
    assert (await woken.admission.ticket.reply).speaker.name == "Ember"


async def test_cast_rights_limits_and_set_replaces_the_cast(fake_app):
    app, backend = fake_app
    refused = await run(app, "persona add companion", author=ALICE)
    assert not refused.ok, "changing the cast needs a room manager"
    await cast_of_two(app)
    assert "already in" in (await run(app, "persona add Ember")).text
    assert not (await run(app, "persona add nobody")).ok
    assert not (await run(app, "settings set group_mode loud")).ok
    assert not (await run(app, "settings set group_replies 0")).ok
    assert "group: mode natural, replies 1, chain 0" in (await run(app, "settings show")).text
    removed = await run(app, "persona remove hearth")
    assert removed.ok and "Hearth left" in removed.text
    assert (await run(app, "persona cast")).text.startswith("companion (Ember)")
    assert not (await run(app, "persona remove Ember")).ok, "the last persona stays"
    backend.enqueue(["solo"])
    reply = await app.conversation.reply_now(message("hi"))
    assert reply.speaker is None and await reply.text() == "solo", "a cast of one is a plain persona again"
    await run(app, "persona add narrator")
    await run(app, "persona set storyteller")
    assert (await run(app, "persona cast")).text.count("\n") == 0, "persona set replaces the whole cast"


async def test_a_joining_character_greets_with_its_group_only_greeting(fake_app, tmp_path: Path):
    app, _ = fake_app
    folder = tmp_path / "personas"
    folder.mkdir(exist_ok=True)
    (folder / "bard.yaml").write_text(
        "name: Lyra\ndescription: a bard\ntalkativeness: 0.9\ngroup_only_greetings:\n  - 'Hello, {{user}}, and all!'\n"
    )
    app.personas.reload()
    added = await run(app, "persona add bard")
    assert added.ok, added.text
    out = Recorder()
    await deliver_with_follow_ups(added.reply, out)
    assert out.replies == [("Lyra", "Hello, Mod, and all!")], "the greeting comes as the character's own message"
    stored = await app.store.messages(await conversation_id(app))
    assert (stored[-1].author_name, stored[-1].text) == ("Lyra", "Hello, Mod, and all!")
    assert "talkativeness 0.9" in (await run(app, "persona cast")).text


@pytest.mark.parametrize("raw", ["0.8", 0.8, "lots"])
def test_card_talkativeness_is_read_from_extensions(raw):
    from personas import Persona

    persona = Persona(name="X", extensions={"talkativeness": raw})
    assert persona.effective_talkativeness == (0.8 if raw != "lots" else 0.5)


async def test_any_user_message_stops_a_chain_even_one_that_wants_no_reply(fake_app):
    app, backend = fake_app
    await cast_of_two(app, replies=1, chain=5)
    gate = asyncio.Event()
    backend.enqueue(["one"])
    backend.enqueue(["two"], gate=gate)
    out = Recorder()
    first = await app.conversation.handle(message("Hearth, tell us a tale"))
    delivery = asyncio.create_task(deliver_with_follow_ups(first.admission, out))
    while len(backend.history) < 2:
        await asyncio.sleep(0.01)
    aside = await app.conversation.handle(message("brb", addressed=False, author=Author("u2", "Bob")))
    assert aside.kind == "ignored"
    gate.set()
    await delivery
    assert [text for _, text in out.replies] == ["one", "two"]
    await app.conversation.scheduler.wait_idle()
    assert len(backend.history) == 2


async def test_regenerate_in_a_cast_asks_the_same_character_again(fake_app):
    app, backend = fake_app
    await cast_of_two(app)
    backend.enqueue(["first try"])
    out = await answers(app, "Ember, a riddle?")
    await app.conversation.scheduler.wait_idle()
    for _ in range(3):  # natural mode would pick the other character, who did not just speak
        backend.enqueue(["again"])
        again = await run(app, "regenerate", author=ALICE)
        assert again.ok, again.text
        await deliver_with_follow_ups(again.reply, out)
        await app.conversation.scheduler.wait_idle()
    assert [name for name, _ in out.replies] == ["Ember"] * 4


async def test_stop_ends_the_cast_s_answers_too(fake_app):
    app, backend = fake_app
    await cast_of_two(app, replies=2)
    gate = asyncio.Event()
    backend.enqueue(["one", "two"], gate=gate)
    out = Recorder()
    first = await app.conversation.handle(message("Hello, Hearth and Ember!"))
    delivery = asyncio.create_task(deliver_with_follow_ups(first.admission, out))
    while not backend.history:
        await asyncio.sleep(0.01)
    assert (await run(app, "stop", author=ALICE)).text == "stopped"
    gate.set()
    await delivery
    await app.conversation.scheduler.wait_idle()
    assert len(out.replies) == 1 and len(backend.history) == 1, "the second character did not answer"


async def test_in_a_cast_a_character_stops_at_any_members_next_line_its_own_too(fake_app):
    """A small model that has answered as Ember goes on with "\nEmber: …" or "\nHearth: …" lines,
    writing the chat log; each character's reply ends there, so one reply is one turn."""
    app, backend = fake_app
    await cast_of_two(app, replies=2)
    backend.enqueue(["Hi"])
    backend.enqueue(["Hello"])
    out = await answers(app, "Hello both")
    assert sorted(name for name, _ in out.replies) == ["Ember", "Hearth"]
    for request in backend.history[-2:]:
        assert {"\nHearth:", "\nEmber:", "\nAlice:"} <= set(request.sampling.stop), request.sampling.stop
    assert (await run(app, "persona remove companion")).ok
    backend.enqueue(["Alone"])
    await (await app.conversation.handle(message("Hello Hearth"))).admission.ticket.reply
    assert "\nHearth:" not in backend.history[-1].sampling.stop, "alone, a persona's own name is no stop"
