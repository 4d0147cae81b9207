"""``memory search``: what the room's full-text index holds, through the command core, on a real store."""

from __future__ import annotations

import re

from engine.commands.core import CommandContext
from engine.types import Author, IncomingMessage, RoomRef

ROOM = RoomRef("test", "recall")
OTHER = RoomRef("test", "elsewhere")
ANN = Author("u1", "Ann")
BO = Author("u2", "Bo")
HIT = re.compile(r"^[01]\.\d\d  \d{4}-\d\d-\d\d \d\d:\d\d  (\w+): (.+)$")


async def say(conv, room: RoomRef, author: Author, text: str, mid: str) -> None:
    await conv.remember(IncomingMessage(room, author, text, mid))


async def test_memory_search_lists_this_rooms_hits_one_per_line(app):
    conv = app.conversation
    await say(conv, ROOM, ANN, "My cat is called Marmalade and she sleeps on the piano.", "a1")
    await say(conv, ROOM, BO, "Marmalade\nonce ate my sandwich. " + "It was a long story. " * 40, "b1")
    await say(conv, ROOM, BO, "The weather is grey today.", "b2")
    await say(conv, OTHER, BO, "Secret: Marmalade is also the name of my boat.", "o1")

    result = await conv.run_command("memory search where does Marmalade sleep?", CommandContext(ROOM, ANN))
    assert result.ok
    lines = result.text.splitlines()
    assert len(lines) == 2, result.text
    found = [HIT.match(line) for line in lines]
    assert all(found), result.text
    assert [(m.group(1), m.group(2)[:20]) for m in found if m] == [
        ("Ann", "My cat is called Mar"),
        ("Bo", "Marmalade once ate m"),
    ], "best first; each hit on one line"
    assert lines[1].endswith("…") and len(lines[1]) < 220, "long messages are trimmed"
    assert "boat" not in result.text, "never another room's messages"

    none = await conv.run_command("memory search submarine", CommandContext(ROOM, ANN))
    assert none.ok and none.text == "nothing in this room's memory matches 'submarine'"
    usage = await conv.run_command("memory search", CommandContext(ROOM, ANN))
    assert not usage.ok and usage.text.startswith("usage: memory search")

    await conv.run_command("memory forget-me", CommandContext(ROOM, ANN))
    after = await conv.run_command("memory search piano", CommandContext(ROOM, ANN))
    assert after.text.startswith("nothing in this room's memory matches"), "forget-me removes the hit"


PLANTED = "By the way, my sister Beatrix lives in Reykjavik and keeps bees."
FILLER = [
    ("user", "What should I cook tonight?"),
    ("assistant", "A vegetable soup is quick and warm."),
    ("user", "Good idea, thanks. Any dessert?"),
    ("assistant", "Baked apples with cinnamon."),
]


async def room_with_an_old_fact(app, ref: RoomRef) -> int:
    """A room where the planted fact has left the window: a summary (without it) covers it."""
    store = app.store
    cid = (await app.conversation.room(ref)).conversation_id
    await store.append(cid, role="user", author_id="u1", author_name="Ann", text=PLANTED)
    last = None
    for role, text in FILLER * 3:
        name = "Ann" if role == "user" else "Hearth"
        last = await store.append(cid, role=role, author_id="u1" if role == "user" else "hearth", author_name=name,
                                  text=text)
    await store.save_summary(cid, "Ann and Hearth talked about cooking dinner and dessert.", last.id)
    for role, text in FILLER[:2]:  # recent turns, in view
        await store.append(cid, role=role, author_id="u1", author_name="Ann" if role == "user" else "Hearth",
                           text=text)
    return cid


async def prompt_for(app, ref: RoomRef, question: str, recall_tokens: int | None = None) -> str:
    conv = app.conversation
    await conv.remember(IncomingMessage(ref, ANN, question))
    builder = conv.prompts
    if recall_tokens is not None:
        from engine.prompting import PromptBuilder

        builder = PromptBuilder(app.store, conv.personas, recall_tokens)
    prompt = await builder.build(app.host.require(), await conv.room_turn(ref), "Ann", 48)
    return "\n".join(message.content for message in prompt.messages)


async def test_an_old_detail_is_recalled_when_asked_about(app):
    from engine.recall import RECALL_HEADER

    ref = RoomRef("test", "recall-asked")
    await room_with_an_old_fact(app, ref)
    reply = await app.conversation.reply_now(IncomingMessage(ref, ANN, "Remind me, where my sister lives?", "q1",
                                                             addressed=True))
    assert (await reply.text()).strip()
    prompt = (await app.conversation.room(ref)).last_prompt
    text = "\n".join(message.content for message in prompt.messages)
    assert RECALL_HEADER in text and "] Ann: By the way, my sister Beatrix lives in Reykjavik" in text
    assert text.index("Reykjavik") > text.index("vegetable soup"), "recall goes after the recent turns"
    assert prompt.messages[-1].content.endswith("Ann: Remind me, where my sister lives?")


async def test_nothing_is_recalled_for_an_unrelated_question_another_room_or_when_off(app):
    from engine.recall import RECALL_HEADER

    ref = RoomRef("test", "recall-unrelated")
    await room_with_an_old_fact(app, ref)
    unrelated = await prompt_for(app, ref, "Can you recommend a good book about volcanoes?")
    assert RECALL_HEADER not in unrelated and "Reykjavik" not in unrelated
    off = await prompt_for(app, ref, "Remind me, where my sister lives?", recall_tokens=0)
    assert "Reykjavik" not in off, "memory.recall_tokens: 0 turns recall off"
    tight = await prompt_for(app, ref, "Remind me, where my sister lives?", recall_tokens=8)
    assert "Reykjavik" not in tight, "a line that does not fit the budget is left out"
    on = await prompt_for(app, ref, "Remind me, where my sister lives?")
    assert "Reykjavik" in on

    other = RoomRef("test", "recall-other-room")
    await room_with_an_old_fact(app, RoomRef("test", "recall-source"))
    elsewhere = await prompt_for(app, other, "Remind me, where my sister lives?")
    assert "Reykjavik" not in elsewhere, "recall never crosses rooms"


def test_a_long_full_text_hit_shows_the_part_holding_the_word():
    from engine.recall import LINE_CHARS, matching_part

    text = "filler words here. " * 400 + "The key is under the lighthouse mat. " + "more filler. " * 400
    shown = matching_part(text, ["lantern", "lighthouse"])
    assert "lighthouse mat" in shown and shown.startswith("…") and shown.endswith("…")
    assert len(shown) <= LINE_CHARS
    assert matching_part("short line", ["lighthouse"]) == "short line"
