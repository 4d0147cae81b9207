"""Discord → engine translation: rooms and threads, rights, readable text, attachments, the client."""

from __future__ import annotations

import asyncio
import logging

import discord
import discord.ext.test.backend as back
import pytest

from adapters.discord_adapter import make_client
from adapters.discord_mapping import (
    author_for,
    in_answer_channel,
    is_operator,
    is_room_manager,
    read_attachments,
    readable_text,
    room_for,
    room_for_channel_id,
)
from adapters.discord_reply import SAFE_MENTIONS
from config import DiscordConfig
from engine.types import RoomRef
from errors import ConfigError
from tests.discord.conftest import Harness

MANAGE_GUILD = discord.Permissions(manage_guild=True).value
ADMINISTRATOR = discord.Permissions(administrator=True).value
MANAGE_CHANNELS = discord.Permissions(manage_channels=True).value


def test_client_sets_safe_mentions_and_message_content_intent():
    client = make_client(DiscordConfig())
    assert type(client) is discord.Client
    assert client.allowed_mentions is not None
    assert client.allowed_mentions.to_dict() == {"parse": [], "replied_user": True}
    assert client.intents.message_content and client.intents.dm_messages and client.intents.guild_messages


def test_shard_count_uses_auto_sharded_client():
    fixed = make_client(DiscordConfig(shard_count=3))
    auto = make_client(DiscordConfig(shard_count="auto"))
    assert isinstance(fixed, discord.AutoShardedClient) and fixed.shard_count == 3
    assert isinstance(auto, discord.AutoShardedClient) and auto.shard_count is None
    assert auto.allowed_mentions.to_dict() == SAFE_MENTIONS.to_dict()


async def test_each_channel_and_thread_is_its_own_room(bare_harness: Harness):
    general, random = bare_harness.channel(0), bare_harness.channel(1)
    thread = bare_harness.make_thread(parent=general)
    assert room_for(general) == RoomRef("discord", str(general.id))
    assert room_for(random) != room_for(general)
    assert room_for(thread) == RoomRef("discord", str(general.id), str(thread.id))
    assert room_for(thread) != room_for(general)
    # raw edit/delete events carry only a channel id; a thread still maps to its own room
    assert room_for_channel_id(bare_harness.adapter.client, thread.id) == room_for(thread)
    assert room_for_channel_id(bare_harness.adapter.client, general.id) == room_for(general)
    dm = await bare_harness.member().create_dm()
    assert room_for(dm) == RoomRef("discord", str(dm.id))


async def test_answer_channels_match_ids_names_and_a_threads_parent(bare_harness: Harness):
    general, random = bare_harness.channel(0), bare_harness.channel(1)
    thread = bare_harness.make_thread(parent=general)
    assert in_answer_channel(general, ["general"])
    assert in_answer_channel(general, ["#General"])
    assert in_answer_channel(general, [str(general.id)])
    assert in_answer_channel(thread, [str(general.id)])
    assert not in_answer_channel(random, ["general"])
    assert not in_answer_channel(general, [])


async def test_room_rights_come_from_roles_and_guild_permissions_never_bot_wide(bare_harness: Harness):
    guild, channel = bare_harness.guild, bare_harness.channel()
    plain = bare_harness.member(0)
    assert not plain.guild_permissions.manage_guild and not plain.guild_permissions.administrator
    assert not is_room_manager(plain, channel, [])
    assert is_operator(plain, [str(plain.id)]) and not is_operator(plain, [])

    helpers = back.make_role("Bot Helpers", guild, permissions=0)
    back.update_member(bare_harness.member(1), roles=[helpers])
    helper = guild.get_member(bare_harness.member(1).id)
    assert is_room_manager(helper, channel, ["bot helpers"])
    assert is_room_manager(helper, channel, [str(helpers.id)])
    assert not is_room_manager(helper, channel, ["moderators"])

    managers = back.make_role("Managers", guild, permissions=MANAGE_GUILD)
    back.update_member(plain, roles=[managers])
    manager = author_for(guild.get_member(plain.id), channel, [], [])
    assert manager.is_room_manager and not manager.is_operator

    owners = back.make_role("Owners", guild, permissions=ADMINISTRATOR)
    back.update_member(helper, roles=[owners])
    owner = author_for(guild.get_member(helper.id), channel, [], [])
    assert owner.is_room_manager and not owner.is_operator


async def test_manage_channels_makes_a_room_manager_not_an_operator(bare_harness: Harness):
    role = back.make_role("Channel Mods", bare_harness.guild, permissions=MANAGE_CHANNELS)
    back.update_member(bare_harness.member(0), roles=[role])
    mod = bare_harness.guild.get_member(bare_harness.member(0).id)
    author = author_for(mod, bare_harness.channel(), [], [])
    assert author.is_room_manager and not author.is_operator
    plain = author_for(bare_harness.member(1), bare_harness.channel(), [], [])
    assert not plain.is_room_manager and not plain.is_operator
    assert plain.display_name == bare_harness.member(1).display_name and plain.id == str(bare_harness.member(1).id)


async def test_a_dm_author_is_an_operator_only_by_id(bare_harness: Harness):
    user = bare_harness.member(0)._user
    dm = await bare_harness.member(0).create_dm()
    assert not author_for(user, dm, [], ["@everyone"]).is_operator
    assert not author_for(user, dm, [], ["@everyone"]).is_room_manager
    assert author_for(user, dm, [str(user.id)], []).is_operator


async def test_readable_text_drops_the_bots_mention_and_names_the_others(bare_harness: Harness):
    alice, bob = bare_harness.member(0), bare_harness.member(1)
    message = back.make_message(
        f"<@{bare_harness.bot.id}> say hi to <@{bob.id}> in <#{bare_harness.channel(1).id}>",
        alice,
        bare_harness.channel(),
    )
    text = readable_text(message, bare_harness.bot.id)
    assert text == f"say hi to @{bob.display_name} in #random"


async def test_text_attachments_are_read_and_images_are_not(bare_harness: Harness, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# plan\nbuy milk")
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    items = [back.make_attachment(notes), back.make_attachment(picture)]
    read = await read_attachments(items)
    assert read[0].filename == "notes.md" and read[0].text == "# plan\nbuy milk"
    assert read[1].text is None and read[1].data is None
    cards = await read_attachments(items, cards=True)
    assert cards[1].data == picture.read_bytes()


# -- lifecycle -----------------------------------------------------------------------------

SECRET = "MTIzNDU2.fake-token-never-to-be-logged"


async def test_start_logs_in_runs_the_gateway_in_a_task_and_close_logs_out(make_bare_harness, caplog):
    harness = await make_bare_harness(enabled=True, token=SECRET)
    adapter, client = harness.adapter, harness.adapter.client
    assert client.setup_hook == adapter._setup, "login reads the owners and syncs the slash commands"
    logged_in: list[str] = []
    connected, released = asyncio.Event(), asyncio.Event()

    async def login(token: str) -> None:
        logged_in.append(token)

    async def connect(*, reconnect: bool = True) -> None:
        connected.set()
        await released.wait()

    async def close() -> None:
        released.set()

    client.login, client.connect, client.close = login, connect, close
    with caplog.at_level(logging.DEBUG):
        await asyncio.wait_for(adapter.start(), 1)  # returns while the gateway keeps running
        await asyncio.wait_for(connected.wait(), 1)
        assert not adapter._task.done()
        await asyncio.wait_for(adapter.close(), 1)
    assert logged_in == [SECRET] and released.is_set() and adapter._task.done()
    assert SECRET not in caplog.text


async def test_a_rejected_token_is_a_config_error_without_the_token(make_bare_harness):
    harness = await make_bare_harness(enabled=True, token=SECRET)

    async def login(token: str) -> None:
        raise discord.LoginFailure("Improper token has been passed.")

    harness.adapter.client.login = login
    with pytest.raises(ConfigError) as caught:
        await harness.adapter.start()
    assert caught.value.path == "discord.token" and SECRET not in str(caught.value)
    assert harness.adapter._task is None
