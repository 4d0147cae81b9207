"""``/hearth`` slash commands, called through their real app_commands callbacks.

dpytest cannot send interactions, so each test builds a stand-in Interaction around real
dpytest members and channels; everything behind the callback (rights, the command core,
the engine, the model) is real. Refusals must be ephemeral and must change nothing.
"""

from __future__ import annotations

import json

import discord
import discord.ext.test.backend as back
import pytest

from adapters.discord_adapter import InteractionResponder
from adapters.discord_commands import find_command, model_choices, persona_choices, setting_choices, value_choices
from adapters.discord_mapping import room_for
from engine.commands.core import Command, CommandContext, CommandResult
from engine.limits import RateLimiter
from engine.settings import LimitSettings
from engine.types import Attachment
from personas.files import slugify
from tests.discord.conftest import FakeInteraction, Harness, MakeHarness

MANAGE_GUILD = discord.Permissions(manage_guild=True).value
ADMINISTRATOR = discord.Permissions(administrator=True).value
MANAGE_CHANNELS = discord.Permissions(manage_channels=True).value
DEFAULT_MODEL = "smollm2-135m-instruct"


def with_role(harness: Harness, index: int, name: str, permissions: int) -> discord.Member:
    role = back.make_role(name, harness.guild, permissions=permissions)
    back.update_member(harness.member(index), roles=[role])
    return harness.guild.get_member(harness.member(index).id)


async def slash(harness: Harness, interaction_for, user, path: str, **options):
    """Invoke ``/hearth <path>`` as ``user`` in the first channel; returns the stand-in interaction."""
    interaction = interaction_for(user, harness.channel())
    await find_command(harness.adapter.hearth, path).callback(interaction, **options)
    return interaction


async def room_trigger(harness: Harness) -> str | None:
    conversation = harness.adapter.conversation
    room = await conversation.room(room_for(harness.channel()))
    return (await conversation.store.room_settings(room.conversation_id)).trigger_mode


@pytest.fixture
def host(hearth_app):
    return hearth_app.host


async def test_a_plain_member_model_load_is_refused_ephemerally_and_changes_nothing(
    harness: Harness, interaction_for, host
):
    plain = harness.member(0)
    assert not plain.guild_permissions.manage_guild and not plain.guild_permissions.administrator
    before = host.entry.name
    assert before == DEFAULT_MODEL
    interaction = await slash(harness, interaction_for, plain, "model load", name="gemma-3-270m", now=True)
    (answer,) = interaction.sent
    assert answer.ephemeral
    assert "operator" in answer.content
    assert host.entry.name == before and host.loaded


async def test_an_operator_by_id_loads_a_model_with_ephemeral_output(make_harness: MakeHarness, interaction_for, host):
    harness = await make_harness()
    harness.adapter.config.admin_users.append(str(harness.member(1).id))
    interaction = await slash(harness, interaction_for, harness.member(1), "model load", name="gemma-3-270m")
    assert host.entry.name != DEFAULT_MODEL and "gemma" in host.entry.name
    assert interaction.sent and all(item.ephemeral for item in interaction.sent)
    if interaction.deferred is not None:  # a slow load is deferred first, privately
        assert interaction.deferred.ephemeral and interaction.deferred.thinking


async def test_a_manage_server_member_manages_the_room(harness: Harness, interaction_for):
    manager = with_role(harness, 0, "Managers", MANAGE_GUILD)
    interaction = await slash(harness, interaction_for, manager, "settings set", key="trigger", value="all")
    (answer,) = interaction.sent
    assert answer.ephemeral and "trigger set to all" in answer.content
    assert await room_trigger(harness) == "all"


async def test_administrator_and_admin_roles_manage_the_room(make_harness: MakeHarness, interaction_for):
    harness = await make_harness(admin_roles=["Bot Helpers"])
    helper = with_role(harness, 0, "Bot Helpers", 0)
    owner = with_role(harness, 1, "Owners", ADMINISTRATOR)
    first = await slash(harness, interaction_for, helper, "settings set", key="trigger", value="off")
    assert "trigger set to off" in first.text
    second = await slash(harness, interaction_for, owner, "settings set", key="trigger", value="all")
    assert "trigger set to all" in second.text
    assert await room_trigger(harness) == "all"


async def test_a_plain_member_settings_set_changes_nothing(harness: Harness, interaction_for):
    interaction = await slash(harness, interaction_for, harness.member(1), "settings set", key="trigger", value="all")
    (answer,) = interaction.sent
    assert answer.ephemeral and "room manager" in answer.content
    assert await room_trigger(harness) in (None, "mention")


async def test_manage_channels_may_set_the_persona_but_not_load_models(harness: Harness, interaction_for, host):
    mod = with_role(harness, 0, "Channel Mods", MANAGE_CHANNELS)
    persona = await slash(harness, interaction_for, mod, "persona set", name="storyteller")
    assert "persona set to" in persona.text
    shown = await slash(harness, interaction_for, mod, "settings show")
    assert "persona: Storyteller" in shown.text
    refused = await slash(harness, interaction_for, mod, "model unload")
    assert refused.sent[0].ephemeral and host.loaded


@pytest.mark.parametrize("permissions", [MANAGE_GUILD, ADMINISTRATOR], ids=["manage-server", "administrator"])
async def test_guild_power_never_changes_the_bot_for_other_guilds(harness: Harness, interaction_for, host, permissions):
    """A guild's own managers are room managers there, never operators of the whole bot."""
    boss = with_role(harness, 0, "Bosses", permissions)
    unload = await slash(harness, interaction_for, boss, "model unload")
    assert "operator" in unload.text and host.loaded and host.entry.name == DEFAULT_MODEL
    load = await slash(harness, interaction_for, boss, "model load", name="/etc/passwd", now=True)
    assert "operator" in load.text and host.entry.name == DEFAULT_MODEL
    help_text = (await slash(harness, interaction_for, boss, "help")).text
    assert "model unload — free the model's memory (operator)" in help_text


async def test_an_operators_chat_model_load_takes_registered_models_only(
    make_harness: MakeHarness, interaction_for, host, tmp_path
):
    harness = await make_harness()
    operator = harness.member(0)
    harness.adapter.config.admin_users.append(str(operator.id))
    stray = tmp_path / "stray.gguf"
    stray.write_bytes(b"GGUF" + bytes(64))
    texts = []
    for path in (str(stray), str(tmp_path / "missing.gguf"), "/dev/zero", "../../etc/passwd"):
        answer = await slash(harness, interaction_for, operator, "model load", name=path)
        texts.append(answer.text.replace(path, "PATH"))
    assert len(set(texts)) == 1 and "unknown model 'PATH'" in texts[0], texts
    assert host.entry.name == DEFAULT_MODEL


async def test_application_owners_are_operators(make_harness: MakeHarness, interaction_for, host):
    """Like discord.py's ``Bot.is_owner``: the application's owner (or team) runs bot-wide commands."""
    harness = await make_harness()
    owner = harness.member(1)

    class Info:
        team = None

    Info.owner = owner

    async def application_info():
        return Info()

    harness.adapter.client.application_info = application_info
    refused = await slash(harness, interaction_for, owner, "model unload")
    assert "operator" in refused.text and host.loaded
    await harness.adapter.load_owners()
    done = await slash(harness, interaction_for, owner, "model unload")
    assert "unloaded" in done.text and not host.loaded


async def test_everyone_commands_answer_publicly(harness: Harness, interaction_for):
    stats = await slash(harness, interaction_for, harness.member(1), "stats")
    (answer,) = stats.sent
    assert not answer.ephemeral
    assert DEFAULT_MODEL in answer.content and "queue:" in answer.content and "uptime:" in answer.content
    listing = await slash(harness, interaction_for, harness.member(1), "model list")
    assert DEFAULT_MODEL in listing.text and not listing.sent[0].ephemeral
    assert listing.text.startswith("```") and listing.text.endswith("```"), "a table keeps its columns"


async def test_memory_search_finds_what_was_said_in_this_channel(harness: Harness, interaction_for):
    await harness.say("my sister's flat is in Lisbon, near the river", member=harness.member(0))
    found = await slash(harness, interaction_for, harness.member(1), "memory search", query="where's Lisbon")
    assert "Lisbon, near the river" in found.text, found.text
    nothing = await slash(harness, interaction_for, harness.member(1), "memory search", query="volcano")
    assert "nothing in this room's memory matches" in nothing.text, nothing.text


async def test_regenerate_writes_the_last_reply_again(harness: Harness, interaction_for):
    channel = harness.channel()
    await harness.say(f"<@{harness.bot.id}> Name a fruit.")
    assert len(harness.bot_texts(channel)) == 1
    interaction = await slash(harness, interaction_for, harness.member(0), "regenerate")
    await harness.settle()
    assert "regenerating" in interaction.text
    texts = harness.bot_texts(channel)
    assert len(texts) == 2 and texts[1].strip() and not texts[1].startswith("⚠️")


async def test_regenerate_with_nothing_to_redo_is_a_private_error(harness: Harness, interaction_for):
    interaction = await slash(harness, interaction_for, harness.member(0), "regenerate")
    (answer,) = interaction.sent
    assert answer.ephemeral and "no bot reply" in answer.content
    assert harness.bot_texts(harness.channel()) == []


async def test_persona_import_passes_the_card_file(harness: Harness, interaction_for, tmp_path):
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Captain Quill", "description": "A pirate poet.", "first_mes": "Ahoy!"},
    }
    path = tmp_path / "quill.json"
    path.write_text(json.dumps(card))
    harness.adapter.config.admin_users.append(str(harness.member(0).id))
    interaction = await slash(
        harness, interaction_for, harness.member(0), "persona import", file=back.make_attachment(path)
    )
    assert "imported Captain Quill" in interaction.text, interaction.text
    assert harness.adapter.conversation.personas.get(slugify("Captain Quill")).name == "Captain Quill"


async def test_persona_import_of_a_png_card(harness: Harness, interaction_for, fixtures_dir):
    harness.adapter.config.admin_users.append(str(harness.member(0).id))
    card = back.make_attachment(fixtures_dir / "Seraphina.png")
    interaction = await slash(harness, interaction_for, harness.member(0), "persona import", file=card)
    assert "imported Seraphina" in interaction.text, interaction.text
    again = await slash(harness, interaction_for, harness.member(0), "persona import", file=card)
    assert "already exists" in again.text and "--replace" in again.text


async def test_a_room_managers_persona_import_writes_nothing(
    harness: Harness, interaction_for, fixtures_dir, tmp_path
):
    before = sorted(p.name for p in (tmp_path / "personas").iterdir())
    card = back.make_attachment(fixtures_dir / "Seraphina.png")
    manager = with_role(harness, 1, "Managers", MANAGE_GUILD)
    interaction = await slash(harness, interaction_for, manager, "persona import", file=card)
    assert interaction.sent[0].ephemeral and "operator" in interaction.text
    assert sorted(p.name for p in (tmp_path / "personas").iterdir()) == before


async def test_long_output_is_split_or_sent_as_a_file(bare_harness: Harness):
    medium = FakeInteraction(bare_harness.member(), bare_harness.channel())
    await InteractionResponder(medium, ephemeral_hint=False).send("line of text\n" * 250, ephemeral=True)
    assert len(medium.sent) == 2 and all(len(item.content) <= 2000 and item.ephemeral for item in medium.sent)
    assert [item.kind for item in medium.sent] == ["response", "followup"]
    huge = FakeInteraction(bare_harness.member(), bare_harness.channel())
    await InteractionResponder(huge, ephemeral_hint=False).send("x" * 9000, ephemeral=False)
    (item,) = huge.sent
    assert isinstance(item.file, discord.File) and item.file.filename == "hearth-output.txt"
    assert item.allowed_mentions is not None


async def test_autocomplete_reads_the_registries(harness: Harness):
    conversation = harness.adapter.conversation
    names = [choice.value for choice in model_choices(conversation, "")]
    assert DEFAULT_MODEL in names and any("gemma" in n for n in names)
    assert [c.value for c in model_choices(conversation, "smol")] == [DEFAULT_MODEL]
    assert "storyteller" in [c.value for c in persona_choices(conversation, "story")]
    assert [c.value for c in setting_choices("temp")] == ["temperature"]
    assert [c.value for c in value_choices("trigger", "")] == ["mention", "all", "off"]
    load = find_command(harness.adapter.hearth, "model load")
    assert load.get_parameter("name").autocomplete


COMMAND_PATHS = (
    "model list", "model info", "model load", "model unload",
    "persona list", "persona show", "persona set", "persona import", "persona export",
    "memory show", "memory reset", "memory forget-me", "memory export", "memory summarize", "memory search",
    "lore list", "lore add", "lore remove",
    "settings show", "settings set",
    "stats", "regenerate", "stop", "help",
)  # fmt: skip


def test_every_command_is_under_one_hearth_group(bare_harness: Harness):
    group = bare_harness.adapter.hearth
    assert bare_harness.adapter.tree.get_commands() == [group]
    for path in COMMAND_PATHS:
        assert find_command(group, path).qualified_name == f"hearth {path}"


async def test_every_slash_command_maps_to_a_core_command(harness: Harness):
    core = harness.adapter.conversation.commands
    for path in COMMAND_PATHS:
        command, _ = core.find(path.split())
        assert command.name == path


async def test_commands_sync_to_the_dev_guild_or_globally(make_bare_harness: MakeHarness):
    calls: list = []

    async def fake_sync(*, guild=None):
        calls.append(guild)
        return []

    dev = await make_bare_harness(dev_guild="123456789012345678")
    dev.adapter.tree.sync = fake_sync
    await dev.adapter.sync_commands()
    assert calls[-1] is not None and calls[-1].id == 123456789012345678
    assert dev.adapter.tree.get_commands(guild=discord.Object(id=123456789012345678))

    everywhere = await make_bare_harness()
    everywhere.adapter.tree.sync = fake_sync
    await everywhere.adapter.sync_commands()
    assert calls[-1] is None


async def test_command_files_are_attached_to_the_answer(harness: Harness, interaction_for):
    """A ``CommandResult``'s files go through the shared presenter and arrive as ``discord.File``s."""
    card = Attachment("quill.json", "application/json", data=b'{"spec": "chara_card_v2"}')

    async def export(ctx: CommandContext, args: list[str]) -> CommandResult:
        return CommandResult("here is the card", files=(card,))

    harness.adapter.conversation.commands.add(Command(("card", "demo"), export, "a test command with a file"))
    interaction = interaction_for(harness.member(0), harness.channel())
    await harness.adapter.run_slash(interaction, ["card", "demo"])
    text, attached = interaction.sent
    assert text.content == "here is the card" and not text.ephemeral
    (file,) = attached.files
    assert isinstance(file, discord.File) and file.filename == "quill.json"
    assert file.fp.read() == card.data


async def test_slash_persona_export_attaches_the_rooms_card(harness: Harness, interaction_for):
    """Any member may export the persona the bot already shows in the room, as a PNG card."""
    interaction = await slash(harness, interaction_for, harness.member(1), "persona export")
    files = [file for item in interaction.sent for file in getattr(item, "files", ())]
    (card,) = files
    data = card.fp.read()
    assert card.filename.endswith(".png") and data.startswith(b"\x89PNG") and b"ccv3" in data
    refused = await slash(harness, interaction_for, harness.member(1), "persona export", name="storyteller")
    assert "operator" in refused.text and not [f for item in refused.sent for f in getattr(item, "files", ())]


async def test_a_rate_limited_mention_gets_one_notice_through_the_presenter(harness: Harness, interaction_for):
    """The chat path's notice (an ``Outcome``) is presented as a reply to the message that was refused."""
    conversation = harness.adapter.conversation
    conversation.limits = RateLimiter(LimitSettings(user_messages_per_minute=1, user_burst=1))
    await slash(harness, interaction_for, harness.member(0), "help")  # the one token
    await harness.say(f"<@{harness.bot.id}> are you there?")
    (notice,) = harness.bot_messages(harness.channel())
    assert notice["content"].startswith("slow down: you can write again in ")
    assert harness.wire.sends[-1].get("message_reference"), "the notice answers the refused message"
    await harness.say(f"<@{harness.bot.id}> hello??")
    assert len(harness.bot_messages(harness.channel())) == 1, "then silence"
