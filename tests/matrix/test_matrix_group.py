"""A room with a cast of characters, against the real Synapse: each message shows its character.

Every message of a character opens with its bold name and carries ``org.hearth.character``
and an MSC4144 per-message profile whose avatar is the card image, uploaded once. A user's
reply to one character's message is answered by that character.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nio import AsyncClient, DownloadResponse
from PIL import Image

from adapters.matrix_adapter import MatrixOutput
from adapters.matrix_characters import CHARACTER_KEY, PROFILE_KEY, CharacterAvatars, CharacterMessages
from adapters.presenting import deliver_with_follow_ups
from adapters.recent_ids import RecentIds
from adapters.rendering import UNFINISHED_MARKER
from engine.reply import ReplyStream
from engine.scheduler import Admission, Ticket
from engine.types import Attachment, RoomRef, Speaker

from .bot import Bot
from .harness import collect_events, is_edit, relation, send_text, wait_for_event
from .test_matrix_bot import from_bot, group_room, mention

pytestmark = pytest.mark.timeout(300)

BotFactory = Callable[..., Awaitable[Bot]]
FALLBACK = "<strong data-mx-profile-fallback>{}: </strong>"


def png(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


def speaker(name: str, image: bytes) -> Speaker:
    return Speaker(name, name.lower(), Attachment(f"{name.lower()}.png", "image/png", len(image), data=image))


def admitted(text: str, who: Speaker, room_id: str) -> Admission:
    """A turn whose reply is ready: ``text`` written by ``who``."""
    stream = ReplyStream.from_text(text)
    stream.speaker = who
    ticket = Ticket(room_id)
    ticket.reply.set_result(stream)
    return Admission(ticket, joined_existing=False, position=0)


def chained(*admissions: Admission) -> Admission:
    """Each admission's follow-up is the next one, as the engine chains a cast's answers."""
    for first, then in zip(admissions, (*admissions[1:], None), strict=True):
        first.ticket.follow_up.set_result(then)
    return admissions[0]


def content_of(event: dict[str, Any]) -> dict[str, Any]:
    """What a client shows: an edit's ``m.new_content``, else the event's own content."""
    content: dict[str, Any] = event["content"]
    return content.get("m.new_content", content)


async def character_replies(user: AsyncClient, room_id: str, bot_id: str, answering: str, count: int) -> list[dict]:
    """The bot's events (first sends and edits) up to ``count`` finished replies to ``answering``."""
    latest: dict[str, str] = {}  # first event id -> its latest body

    def finished(event: Any) -> bool:
        if not from_bot(bot_id)(event):
            return False
        if is_edit(event):
            target = relation(event).get("event_id")
            if target in latest:
                latest[target] = event.source["content"]["m.new_content"]["body"]
        elif relation(event).get("m.in_reply_to", {}).get("event_id") == answering:
            latest[event.source["event_id"]] = event.source["content"]["body"]
        done = [body for body in latest.values() if not body.endswith(UNFINISHED_MARKER)]
        return len(done) >= count

    events = await collect_events(user, room_id, finished, timeout=150)
    return [e for e in events if e.get("sender") == bot_id]


def persona_yaml(name: str, avatar: Path, colour: str, trait: str) -> str:
    avatar.write_bytes(png(colour))
    return (
        f"name: {name}\n"
        f"description: '{{{{char}}}} is a {trait} who chats in one short sentence.'\n"
        f"system_prompt: 'You are {{{{char}}}}. Answer in one short sentence.'\n"
        f"avatar: {avatar}\n"
        "talkativeness: 1.0\n"  # always speaks up when drawn, so both characters answer
    )


async def test_each_characters_message_carries_its_name_profile_and_avatar_uploaded_once(
    matrix_bot: BotFactory, matrix_user: Callable[..., Awaitable[AsyncClient]]
) -> None:
    bot = await matrix_bot()
    alice, bob = await matrix_user("alice"), await matrix_user("bob")
    room_id = await group_room(alice, bot, [bob])
    asked = await send_text(alice, room_id, "a word to the room, not to the bot")
    await wait_for_event(alice, room_id, lambda e: e.source.get("event_id") == asked)
    ember, moss = speaker("Ember", png("red")), speaker("Moss", png("green"))
    room = bot.adapter.client.rooms[room_id]
    out = MatrixOutput(bot.adapter, room, SimpleNamespace(event_id=asked, source={}), RoomRef("matrix", room_id))

    await deliver_with_follow_ups(
        chained(
            admitted("Hello from **Ember**.", ember, room_id),
            admitted("And Moss says hi.", moss, room_id),
            admitted("Ember again.", ember, room_id),
        ),
        out,
    )
    events = await character_replies(alice, room_id, bot.user_id, asked, 3)

    firsts = [e for e in events if not e["content"].get("m.relates_to", {}).get("rel_type")]
    assert [e["content"][CHARACTER_KEY]["name"] for e in firsts] == ["Ember", "Moss", "Ember"]
    avatars: dict[str, set[str]] = {}
    for event in events:  # the first send and every edit (its m.new_content) show the character
        content = content_of(event)
        name = content[CHARACTER_KEY]["name"]
        assert content[CHARACTER_KEY] == {"name": name, "key": name.lower()}
        assert content["body"].startswith(f"{name}: ")
        assert FALLBACK.format(name) in content["formatted_body"]
        profile = content[PROFILE_KEY]
        assert profile["id"] == name.lower() and profile["displayname"] == name and profile["has_fallback"] is True
        assert profile["avatar_url"].startswith("mxc://")
        avatars.setdefault(name, set()).add(profile["avatar_url"])
    assert {name: len(urls) for name, urls in avatars.items()} == {"Ember": 1, "Moss": 1}
    assert avatars["Ember"] != avatars["Moss"]
    assert bot.adapter.avatars.uploads == 2, "each card image is uploaded once, then reused"
    ember_html = [content_of(e)["formatted_body"] for e in events if "Hello from" in content_of(e)["body"]]
    assert all("<strong>Ember</strong>" in text for text in ember_html), "the reply's own markdown still renders"

    downloaded = await alice.download(mxc=next(iter(avatars["Moss"])))
    assert isinstance(downloaded, DownloadResponse) and moss.avatar is not None
    assert downloaded.body == moss.avatar.data

    # After a restart the stored URI is reused: nothing is uploaded again.
    restarted = CharacterAvatars(bot.adapter.client, bot.adapter.state)
    assert await restarted.url_for(moss) == next(iter(avatars["Moss"]))
    assert restarted.uploads == 0


async def test_two_characters_answer_and_a_reply_to_one_is_answered_by_it(
    matrix_bot: BotFactory, matrix_user: Callable[..., Awaitable[AsyncClient]], tmp_path: Path
) -> None:
    bot = await matrix_bot(
        personas={
            "ash": persona_yaml("Ash", tmp_path / "ash.png", "grey", "grumpy blacksmith"),
            "moss": persona_yaml("Moss", tmp_path / "moss.png", "green", "gentle gardener"),
        }
    )
    alice, bob = await matrix_user("alice"), await matrix_user("bob")
    room_id = await group_room(alice, bot, [bob])  # alice created the room: she manages it
    for line in ("!hearth persona set ash", "!hearth persona add moss", "!hearth settings set group_replies 2"):
        command = await send_text(alice, room_id, line)
        notice = await wait_for_event(alice, room_id, answering(bot.user_id, command))
        said = notice.source["content"]["body"]
        assert "⚠" not in said and "unknown" not in said, said

    question = await send_text(alice, room_id, f"{bot.user_id}: what do you like?", **mention(bot.user_id))
    events = await character_replies(alice, room_id, bot.user_id, question, 2)

    firsts = [e for e in events if not is_edit_source(e)]
    names = [e["content"][CHARACTER_KEY]["name"] for e in firsts]
    assert sorted(names) == ["Ash", "Moss"], "both characters of the cast answered, each under its own name"
    for name, event in zip(names, firsts, strict=True):
        assert event["content"]["body"].startswith(f"{name}: ")
        assert event["content"][PROFILE_KEY]["avatar_url"].startswith("mxc://")
    assert bot.adapter.avatars.uploads == 2

    # A reply to the message of the character who spoke last, naming and mentioning nobody: left
    # to itself the engine would pick the other one first (the last speaker goes again only when
    # alone), so the replied-to character answering first is the reply's doing.
    last_name, last_event = names[-1], firsts[-1]["event_id"]
    reply = {"m.relates_to": {"m.in_reply_to": {"event_id": last_event}}}
    follow_up = await send_text(alice, room_id, "tell me more about that", **reply)
    answers = await character_replies(alice, room_id, bot.user_id, follow_up, 2)

    assert answer_names(answers) == [last_name, names[0]]

    # After a restart the bot has forgotten which events it sent: it reads the character from the
    # replied-to event itself. names[0] spoke last, so again only the reply puts it first.
    bot.adapter._own = RecentIds(10)
    bot.adapter.characters = CharacterMessages(10)
    reply = {"m.relates_to": {"m.in_reply_to": {"event_id": firsts[0]["event_id"]}}}
    again = await send_text(alice, room_id, "and what about you?", **reply)
    answers = await character_replies(alice, room_id, bot.user_id, again, 1)

    assert answer_names(answers)[0] == names[0]


def answer_names(events: list[dict[str, Any]]) -> list[str]:
    """The characters of the replies (first sends) among ``events``, in the order they were sent."""
    return [e["content"][CHARACTER_KEY]["name"] for e in events if not is_edit_source(e)]


def answering(bot_id: str, event_id: str) -> Callable[[Any], bool]:
    def check(event: Any) -> bool:
        return from_bot(bot_id)(event) and relation(event).get("m.in_reply_to", {}).get("event_id") == event_id

    return check


def is_edit_source(event: dict[str, Any]) -> bool:
    return event["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
