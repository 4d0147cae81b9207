"""A cast on Discord: each character speaks through a channel webhook under its own name and avatar.

dpytest has no webhooks, so ``WebhookWire`` answers Discord's webhook endpoints; the payloads it
records are the ones discord.py's own ``Webhook`` built. The channels, threads, messages and
permissions are dpytest's.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import zlib
from itertools import pairwise
from pathlib import Path
from typing import Any

import discord
import discord.ext.test.backend as back
import discord.ext.test.factories as facts
import pytest

from adapters.discord_commands import find_command
from adapters.discord_mapping import room_for
from adapters.discord_reply import SAFE_MENTIONS
from adapters.discord_webhooks import CharacterWebhooks
from engine.reply import ReplyStream
from engine.types import Attachment, Speaker
from tests.discord.conftest import (
    Harness,
    PacedStream,
    WebhookWire,
    admission_for,
    sent_log,
    webhook_message_dict,
)

SAFE = SAFE_MENTIONS.to_dict()
WEBHOOK_LOGGER = "adapters.discord_webhooks"


def tiny_png(red: int) -> bytes:
    """A valid 1×1 PNG: the card image a character's webhook is created with."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, red, 64, 32]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


EMBER = Speaker("Ember", "ember", Attachment("ember.png", "image/png", data=tiny_png(200)))
BRAM = Speaker("Bram", "bram", Attachment("bram.png", "image/png", data=tiny_png(10)))


def spoken(stream: ReplyStream, speaker: Speaker | None) -> ReplyStream:
    stream.speaker = speaker
    return stream


def grant_manage_webhooks(harness: Harness) -> None:
    """Give the bot a role with Manage Webhooks, as a server admin would."""
    allowed = discord.Permissions(manage_webhooks=True, send_messages=True, read_messages=True)
    role = back.make_role("Hearth", harness.guild, permissions=allowed.value)
    back.update_member(harness.guild.me, roles=[role])


@pytest.fixture
def wire(bare_harness: Harness, monkeypatch: pytest.MonkeyPatch) -> WebhookWire:
    webhooks = WebhookWire(bare_harness.adapter.client)
    webhooks.install(monkeypatch)
    return webhooks


async def deliver(harness: Harness, stream: Any, channel: Any = None, *, position: int = 0) -> None:
    channel = channel if channel is not None else harness.channel()
    await harness.adapter.deliver(channel, admission_for(stream, position), room_for(channel))
    await harness.settle()


def webhook_payloads(wire: WebhookWire) -> list[dict[str, Any]]:
    return [call.payload for call in wire.calls if call.payload is not None]


# -- the webhook path ----------------------------------------------------------------------


async def test_a_character_streams_through_its_own_webhook_with_name_and_avatar(
    bare_harness: Harness, wire: WebhookWire
):
    grant_manage_webhooks(bare_harness)
    channel = bare_harness.channel()
    pieces = [(i * 0.4, f"word{i} ") for i in range(12)] + [(5.0, "ping @everyone and <@&123>")]
    await deliver(bare_harness, spoken(PacedStream(bare_harness.clock, pieces), EMBER))

    (created,) = wire.created
    assert created["channel_id"] == channel.id and created["name"].startswith("hearth ember ")
    assert created["avatar"] == "data:image/png;base64," + base64.b64encode(EMBER.avatar.data).decode()
    (send,) = wire.sends
    assert send.payload["username"] == "Ember"
    assert "avatar_url" not in send.payload, "the webhook's own avatar (the card image) shows"
    assert send.params["wait"] == 1 and "thread_id" not in send.params
    assert len(wire.edits) >= 3, "the reply streams as edits of the webhook message"
    payloads = webhook_payloads(wire)
    assert payloads and all(p["allowed_mentions"] == SAFE for p in payloads), "every payload is mention-safe"
    edit_times = [at for at, _ in bare_harness.wire.updates]
    assert edit_times == [], "no bot message was sent or edited"
    (message,) = wire.messages(channel)
    assert message["author"]["username"] == "Ember"
    assert message["content"].startswith("word0 word1") and "@\u200beveryone" in message["content"]
    assert bare_harness.bot_texts(channel) == []


async def test_edits_through_the_webhook_keep_the_throttle(make_bare_harness, monkeypatch):
    harness = await make_bare_harness(edit_interval=2.0)
    webhooks = WebhookWire(harness.adapter.client)
    webhooks.install(monkeypatch)
    grant_manage_webhooks(harness)
    times: list[float] = []
    original = webhooks.request

    async def timed(route: Any, session: Any, **kwargs: Any) -> Any:
        if route.method == "POST" or "/messages/" in route.path:  # a send or an edit of a message
            times.append(harness.clock.now)
        return await original(route, session, **kwargs)

    monkeypatch.setattr(webhooks, "request", timed)
    stream = PacedStream(harness.clock, [(i * 0.25, f"t{i} ") for i in range(30)])
    await deliver(harness, spoken(stream, EMBER))
    interim = times[:-1]
    assert len(interim) >= 3 and all(b - a >= 2.0 for a, b in pairwise(interim)), times
    (message,) = webhooks.messages(harness.channel())
    assert message["content"] == "".join(f"t{i} " for i in range(30)).strip()


async def test_webhooks_are_reused_per_character_and_found_again_after_a_restart(
    bare_harness: Harness, wire: WebhookWire
):
    grant_manage_webhooks(bare_harness)
    channel = bare_harness.channel()
    for speaker in (EMBER, BRAM, EMBER, BRAM):
        await deliver(bare_harness, spoken(ReplyStream.from_text(f"I am {speaker.name}."), speaker))
    assert [c["name"].split()[1] for c in wire.created] == ["ember", "bram"], "one webhook per character"
    assert [m["author"]["username"] for m in wire.messages(channel)] == ["Ember", "Bram", "Ember", "Bram"]
    assert len({call.webhook_id for call in wire.sends}) == 2

    restarted = CharacterWebhooks(bare_harness.adapter.client)
    hook = await restarted.for_speaker(channel, BRAM)
    assert hook is not None and len(wire.created) == 2, "the existing webhook is found, not made again"
    assert hook.webhook.id == wire.sends[1].webhook_id


async def test_a_new_card_image_gets_a_new_webhook(bare_harness: Harness, wire: WebhookWire):
    grant_manage_webhooks(bare_harness)
    repainted = Speaker("Ember", "ember", Attachment("ember.png", "image/png", data=tiny_png(90)))
    for speaker in (EMBER, repainted):
        await deliver(bare_harness, spoken(ReplyStream.from_text("Hello."), speaker))
    assert len(wire.created) == 2 and wire.created[0]["avatar"] != wire.created[1]["avatar"]


async def test_in_a_thread_the_parents_webhook_posts_into_the_thread(bare_harness: Harness, wire: WebhookWire):
    grant_manage_webhooks(bare_harness)
    thread = bare_harness.make_thread()
    stream = PacedStream(bare_harness.clock, [(i * 0.5, f"w{i} ") for i in range(8)])
    await deliver(bare_harness, spoken(stream, EMBER), thread)
    (created,) = wire.created
    assert created["channel_id"] == bare_harness.channel().id, "threads have no webhooks of their own"
    assert wire.edits, "the reply streamed"
    assert all(int(call.params["thread_id"]) == thread.id for call in wire.calls), "every call names the thread"
    assert [m["author"]["username"] for m in wire.messages(thread)] == ["Ember"]
    assert wire.messages(bare_harness.channel()) == []


async def test_the_queue_notice_is_a_bot_message_until_the_character_speaks(bare_harness: Harness, wire: WebhookWire):
    grant_manage_webhooks(bare_harness)
    channel = bare_harness.channel()
    future: asyncio.Future[ReplyStream] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(bare_harness.adapter.deliver(channel, admission_for(future, 2), room_for(channel)))
    for _ in range(50):
        await asyncio.sleep(0)
        if bare_harness.bot_texts(channel):
            break
    assert bare_harness.bot_texts(channel) == ["⏳ you're #2 in line…"]
    future.set_result(spoken(ReplyStream.from_text("At last, my turn."), EMBER))
    await task
    assert bare_harness.bot_texts(channel) == [], "the notice is gone"
    assert [m["content"] for m in wire.messages(channel)] == ["At last, my turn."]


async def test_a_deleted_webhook_is_made_again(bare_harness: Harness, wire: WebhookWire):
    grant_manage_webhooks(bare_harness)
    await deliver(bare_harness, spoken(ReplyStream.from_text("One."), EMBER))
    wire.hooks.clear()  # a moderator deleted it in the channel settings
    await deliver(bare_harness, spoken(ReplyStream.from_text("Two."), EMBER))
    assert len(wire.created) == 2
    assert [m["content"] for m in wire.messages(bare_harness.channel())] == ["One.", "Two."]


async def test_one_persona_rooms_still_use_bot_messages(bare_harness: Harness, wire: WebhookWire):
    grant_manage_webhooks(bare_harness)
    await deliver(bare_harness, ReplyStream.from_text("Just me."))
    assert bare_harness.bot_texts(bare_harness.channel()) == ["Just me."]
    assert wire.calls == [] and wire.created == []


# -- without Manage Webhooks ---------------------------------------------------------------


async def test_without_manage_webhooks_names_are_bold_and_one_line_is_logged(
    bare_harness: Harness, wire: WebhookWire, caplog
):
    channel = bare_harness.channel()
    with caplog.at_level(logging.WARNING, logger=WEBHOOK_LOGGER):
        await deliver(bare_harness, spoken(PacedStream(bare_harness.clock, [(0, "Hi "), (2, "@everyone")]), EMBER))
        await deliver(bare_harness, spoken(ReplyStream.from_text("And me."), BRAM))
        await deliver(bare_harness, spoken(ReplyStream.from_text("Again."), EMBER))
    expected = ["**Ember**: Hi @\u200beveryone", "**Bram**: And me.", "**Ember**: Again."]
    assert bare_harness.bot_texts(channel) == expected
    assert wire.calls == [] and wire.created == []
    assert all(p["allowed_mentions"] == SAFE for p in bare_harness.wire.payloads)
    lines = [r.getMessage() for r in caplog.records if r.name == WEBHOOK_LOGGER]
    assert len(lines) == 1, lines
    assert "Manage Webhooks" in lines[0] and str(channel.id) in lines[0]


async def test_when_discord_refuses_webhooks_the_reply_falls_back(bare_harness: Harness, wire: WebhookWire, caplog):
    grant_manage_webhooks(bare_harness)  # the role says yes, but a channel override says no
    wire.refuse = True
    with caplog.at_level(logging.WARNING, logger=WEBHOOK_LOGGER):
        await deliver(bare_harness, spoken(ReplyStream.from_text("Still here."), EMBER))
        await deliver(bare_harness, spoken(ReplyStream.from_text("Me too."), BRAM))
    assert bare_harness.bot_texts(bare_harness.channel()) == ["**Ember**: Still here.", "**Bram**: Me too."]
    assert len([r for r in caplog.records if r.name == WEBHOOK_LOGGER]) == 1


# -- replies to a character ----------------------------------------------------------------


def reply_message(harness: Harness, target: dict[str, Any], *, resolved: bool = True) -> discord.Message:
    """A user's Discord reply to ``target`` (a raw message dict), built but not dispatched."""
    channel = harness.channel()
    data = facts.make_message_dict(channel, harness.member(), content="what do you mean?", type=19)
    data["message_reference"] = {"message_id": target["id"], "channel_id": channel.id, "guild_id": harness.guild.id}
    if resolved:
        data["referenced_message"] = target
    return discord.Message(state=back.get_state(), channel=channel, data=data)


async def test_a_reply_to_a_webhook_message_addresses_that_character(bare_harness: Harness, wire: WebhookWire):
    grant_manage_webhooks(bare_harness)
    channel = bare_harness.channel()
    for speaker in (EMBER, BRAM):
        await deliver(bare_harness, spoken(ReplyStream.from_text(f"{speaker.name} here."), speaker))
    ember_message, bram_message = wire.messages(channel)
    adapter = bare_harness.adapter

    incoming = await adapter.incoming(reply_message(bare_harness, bram_message))
    assert incoming is not None and incoming.replied_to == "Bram" and incoming.addressed
    unresolved = await adapter.incoming(reply_message(bare_harness, ember_message, resolved=False))
    assert unresolved is not None and unresolved.replied_to == "Ember" and unresolved.addressed

    adapter.webhooks = CharacterWebhooks(adapter.client)  # a restart: ids are known only from the channel
    again = await adapter.incoming(reply_message(bare_harness, bram_message))
    assert again is not None and again.replied_to == "Bram" and again.addressed


async def test_a_reply_to_someone_elses_webhook_is_not_a_character(bare_harness: Harness, wire: WebhookWire):
    grant_manage_webhooks(bare_harness)
    channel = bare_harness.channel()
    foreign = webhook_message_dict(channel, facts.make_id(), "RSS", "news!")  # another app's webhook
    incoming = await bare_harness.adapter.incoming(reply_message(bare_harness, foreign))
    assert incoming is not None and incoming.replied_to is None and not incoming.addressed


async def test_in_the_fallback_a_reply_to_a_named_message_addresses_that_character(
    bare_harness: Harness, wire: WebhookWire
):
    channel = bare_harness.channel()
    await deliver(bare_harness, spoken(ReplyStream.from_text("Bram speaking."), BRAM))
    (bot_message,) = bare_harness.bot_messages(channel)
    incoming = await bare_harness.adapter.incoming(reply_message(bare_harness, bot_message))
    assert incoming is not None and incoming.replied_to == "Bram" and incoming.addressed


async def test_the_characters_own_messages_never_reach_the_engine(make_bare_harness, monkeypatch):
    harness = await make_bare_harness(ignore_bots=False)  # other bots are answered like people here
    webhooks = WebhookWire(harness.adapter.client)
    webhooks.install(monkeypatch)
    grant_manage_webhooks(harness)
    await deliver(harness, spoken(ReplyStream.from_text("Ember here."), EMBER))
    (data,) = webhooks.messages(harness.channel())
    echoed = back.get_state()._get_message(int(data["id"]))
    assert echoed is not None and echoed.webhook_id is not None
    assert await harness.adapter.incoming(echoed) is None
    assert sent_log()  # the echo was parsed by discord.py like any gateway message


async def test_a_name_discord_refuses_falls_back_for_that_character_only(
    bare_harness: Harness, wire: WebhookWire, caplog
):
    grant_manage_webhooks(bare_harness)
    clyde = Speaker("Clyde", "clyde", Attachment("clyde.png", "image/png", data=tiny_png(1)))
    wire.refused_usernames.add("Clyde")
    with caplog.at_level(logging.WARNING, logger=WEBHOOK_LOGGER):
        for speaker in (clyde, EMBER, clyde):
            await deliver(bare_harness, spoken(ReplyStream.from_text(f"{speaker.name} talks."), speaker))
    channel = bare_harness.channel()
    assert bare_harness.bot_texts(channel) == ["**Clyde**: Clyde talks.", "**Clyde**: Clyde talks."]
    assert [m["author"]["username"] for m in wire.messages(channel)] == ["Ember"]
    assert [call.payload["username"] for call in wire.sends] == ["Clyde", "Ember"], "a refused name is not retried"
    assert len([r for r in caplog.records if r.name == WEBHOOK_LOGGER]) == 1
    assert "hearth character" in wire.created[0]["name"], "the webhook's own name avoids what Discord refuses"


# -- end to end: dpytest messages in, the real engine and model, a cast answering ----------


def write_cast(folder: Path) -> dict[str, bytes]:
    """Two short-spoken characters with card images, in the harness's persona folder."""
    images = {"wren": tiny_png(240), "bram": tiny_png(20)}
    for key, image in images.items():
        (folder / f"{key}.png").write_bytes(image)
        (folder / f"{key}.yaml").write_text(
            f"name: {key.title()}\n"
            f"description: {key.title()} is a traveller at the inn who answers in one short sentence.\n"
            f"avatar: {key}.png\n"
            "sampling:\n  max_tokens: 24\n"
        )
    return images


async def test_a_two_character_cast_answers_through_webhooks(
    make_harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, interaction_for
):
    harness = await make_harness()
    webhooks = WebhookWire(harness.adapter.client)
    webhooks.install(monkeypatch)
    grant_manage_webhooks(harness)
    images = write_cast(tmp_path / "personas")
    harness.adapter.conversation.personas.reload()
    role = back.make_role("Mods", harness.guild, permissions=discord.Permissions(manage_channels=True).value)
    back.update_member(harness.member(), roles=[role])
    manager, channel = harness.guild.get_member(harness.member().id), harness.channel()

    async def slash(path: str, **options: Any) -> str:
        interaction = interaction_for(manager, channel)
        await find_command(harness.adapter.hearth, path).callback(interaction, **options)
        await harness.settle()
        return interaction.text

    assert "persona set to Wren" in await slash("persona set", name="wren")
    assert "Bram joins the cast" in await slash("persona add", name="bram")
    assert "wren" in (cast := await slash("persona cast")) and "bram" in cast

    await harness.say(f"<@{harness.bot.id}> Wren, where are you travelling to?")
    (first,) = webhooks.messages(channel)
    assert first["author"]["username"] == "Wren" and first["content"].strip()
    await slash("persona speak", name="bram")
    bram_message = webhooks.messages(channel)[-1]
    assert bram_message["author"]["username"] == "Bram"

    await harness.reply_to(bram_message, "And why is that?")  # a reply to Bram's webhook message
    answer = webhooks.messages(channel)[-1]
    assert answer is not bram_message and answer["author"]["username"] == "Bram"

    created = {c["name"].split()[1]: c["avatar"] for c in webhooks.created}
    assert set(created) == {"wren", "bram"}, "one webhook per character, reused"
    for key, avatar in created.items():
        assert avatar == "data:image/png;base64," + base64.b64encode(images[key]).decode()
    assert harness.bot_texts(channel) == [], "every character message went through a webhook"
    assert all(p["allowed_mentions"] == SAFE for p in webhook_payloads(webhooks))
    stored = await harness.stored(channel)
    assert [m.author_name for m in stored if m.role == "assistant"][-3:] == ["Wren", "Bram", "Bram"]
