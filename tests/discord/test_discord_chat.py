"""Triggers end to end: dpytest messages in, real-model replies out (SmolLM2, 32 tokens)."""

from __future__ import annotations

import discord.ext.test.backend as back
import yaml

from adapters.rendering import UNFINISHED_MARKER
from tests.discord.conftest import BUILTIN_ASSISTANT, Harness, MakeHarness, sent_log


def assert_one_finished_reply(harness: Harness, channel) -> str:
    """Exactly one bot message: finished (no marker), not an error line, and it came with a typing indicator."""
    texts = harness.bot_texts(channel)
    assert len(texts) == 1, texts
    text = texts[0]
    assert text.strip() and not text.endswith(UNFINISHED_MARKER.strip())
    assert not text.startswith("⚠️"), text
    assert harness.wire.typing >= 1
    return text


async def test_mention_gets_a_streamed_reply(harness: Harness):
    channel = harness.channel()
    await harness.say(f"<@{harness.bot.id}> What is the capital of France?")
    assert_one_finished_reply(harness, channel)
    # the reply answers the message, and the user's turn is stored without the bot's mention
    assert harness.wire.sends[0].get("message_reference") is not None
    stored = await harness.stored(channel)
    assert [m.text for m in stored if m.role == "user"] == ["What is the capital of France?"]
    assert [m.role for m in stored][-1] == "assistant"


async def test_a_plain_message_is_stored_but_not_answered(harness: Harness):
    channel = harness.channel()
    await harness.say("we should meet on friday")
    assert harness.bot_texts(channel) == []
    assert [m.text for m in await harness.stored(channel)] == ["we should meet on friday"]


async def test_reply_to_a_bot_message_is_answered(harness: Harness):
    channel = harness.channel()
    await harness.say(f"<@{harness.bot.id}> Name a colour.")
    first = harness.bot_messages(channel)[0]
    await harness.reply_to(first, "And another one?")
    assert len(harness.bot_texts(channel)) == 2
    # a reply whose target Discord did not resolve is still recognised by the bot's own message ids
    await harness.reply_to(first, "One more, please.", resolved=False)
    assert len(harness.bot_texts(channel)) == 3


async def test_reply_to_someone_else_is_not_answered(harness: Harness):
    channel = harness.channel()
    message = await harness.say("I like tea", member=harness.member(1))
    data = next(m for m in sent_log()[channel.id] if m["id"] == message.id)
    await harness.reply_to(data, "me too")
    assert harness.bot_texts(channel) == []


async def test_dm_is_answered_when_allowed(make_harness: MakeHarness):
    harness = await make_harness(allow_dms=True)
    dm = await harness.member().create_dm()
    await harness.say("Hello, who are you?", channel=dm)
    assert_one_finished_reply(harness, dm)


async def test_dm_is_ignored_and_not_stored_when_not_allowed(make_harness: MakeHarness):
    harness = await make_harness(allow_dms=False)
    dm = await harness.member().create_dm()
    await harness.say("Hello, who are you?", channel=dm)
    assert harness.bot_texts(dm) == []
    assert await harness.stored(dm) == []


async def test_answer_everything_channel(make_harness: MakeHarness):
    harness = await make_harness(answer_channels=["general"])
    general, random = harness.channel(0), harness.channel(1)
    await harness.say("How many days are in a week?", channel=general)
    assert_one_finished_reply(harness, general)
    await harness.say("How many days are in a week?", channel=random)
    assert harness.bot_texts(random) == []


async def test_wake_word_of_the_rooms_persona(harness: Harness):
    persona = yaml.safe_load(BUILTIN_ASSISTANT.read_text())
    assert persona["name"] == "Hearth"
    channel = harness.channel()
    await harness.say("hey hearth, how many minutes are in an hour?")
    assert_one_finished_reply(harness, channel)
    await harness.say("the hearthstone is warm")  # not a whole word: no reply
    assert len(harness.bot_texts(channel)) == 1


async def test_messages_in_a_thread_are_their_own_conversation(harness: Harness):
    channel = harness.channel()
    thread = harness.make_thread(parent=channel)
    await harness.say("in the channel")
    await harness.say(f"<@{harness.bot.id}> In the thread: say hello.", channel=thread)
    assert_one_finished_reply(harness, thread)
    assert [m.text for m in await harness.stored(channel)] == ["in the channel"]
    thread_turns = await harness.stored(thread)
    assert [m.text for m in thread_turns if m.role == "user"] == ["In the thread: say hello."]


async def test_bot_messages_are_ignored(harness: Harness):
    channel = harness.channel()
    robot = harness.make_bot_member()
    await harness.say(f"<@{harness.bot.id}> hello fellow bot", member=robot)
    assert harness.bot_texts(channel) == []
    assert await harness.stored(channel) == []


async def test_bot_messages_are_answered_when_configured(make_harness: MakeHarness):
    harness = await make_harness(ignore_bots=False)
    channel = harness.channel()
    robot = harness.make_bot_member()
    await harness.say(f"<@{harness.bot.id}> hello fellow bot", member=robot)
    assert_one_finished_reply(harness, channel)


async def test_the_bots_own_messages_never_trigger_it(harness: Harness):
    channel = harness.channel()
    back.make_message(f"<@{harness.bot.id}> talking to myself", harness.guild.me, channel)
    await harness.settle()
    assert harness.bot_texts(channel) == [f"<@{harness.bot.id}> talking to myself"]  # only the fake message itself
    assert await harness.stored(channel) == []


async def test_say_everyone_pings_nobody(harness: Harness):
    channel = harness.channel()
    await harness.say(f"<@{harness.bot.id}> Say exactly this: @everyone @here wake up!")
    assert harness.bot_texts(channel), "the bot should have answered"
    assert harness.wire.payloads
    for payload in harness.wire.payloads:
        assert payload["allowed_mentions"] == {"parse": [], "replied_user": True}
        content = payload.get("content") or ""
        assert "@everyone" not in content and "@here" not in content


async def test_user_edits_and_deletes_update_memory(harness: Harness):
    channel = harness.channel()
    message = await harness.say("my cat is called Tom")
    original = next(m for m in sent_log()[channel.id] if m["id"] == message.id)
    update = {key: value for key, value in original.items() if key != "member"}  # dpytest's member dict is partial
    back.get_state().parse_message_update({**update, "content": "my cat is called Tim"})
    await harness.settle()
    assert [m.text for m in await harness.stored(channel)] == ["my cat is called Tim"]

    back.delete_message(message)
    await harness.settle()
    assert await harness.stored(channel) == []


async def test_a_text_attachment_reaches_the_prompt(harness: Harness, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The password is swordfish.")
    channel = harness.channel()
    back.make_message("see my notes", harness.member(), channel, attachments=[back.make_attachment(notes)])
    await harness.settle()
    stored = await harness.stored(channel)
    assert len(stored) == 1
    assert "see my notes" in stored[0].text and "The password is swordfish." in stored[0].text
