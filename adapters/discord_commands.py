"""The ``/hearth`` slash commands: each one only turns its options into command-core text.

No callback has logic of its own. ``/hearth model load name:x now:true`` becomes the line
``model load x --now`` and goes to ``Conversation.run_command``, where checks, parsing and
behaviour live once for Discord, Matrix and the console. Autocomplete reads the engine's
registries (models, personas, setting keys) and never changes anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from engine.cast import GROUP_SETTINGS
from engine.conversation import TRIGGER_MODES
from engine.group import GROUP_MODES
from engine.sampling import SAMPLING_KEYS

if TYPE_CHECKING:
    from engine.conversation import Conversation

Runner = Callable[..., Awaitable[None]]  # run_slash(interaction, words, attachments=())
MAX_CHOICES = 25  # Discord's limit for autocomplete results
SETTING_KEYS = ("trigger", *GROUP_SETTINGS, *SAMPLING_KEYS)


def _matching(names: Sequence[str], current: str) -> list[app_commands.Choice[str]]:
    """Names containing what the user typed so far, prefix matches first."""
    current = current.strip().lower()
    hits = [n for n in names if current in n.lower()]
    hits.sort(key=lambda n: not n.lower().startswith(current))  # stable: keeps the given order otherwise
    return [app_commands.Choice(name=n[:100], value=n[:100]) for n in hits[:MAX_CHOICES]]


def model_choices(conversation: Conversation, current: str) -> list[app_commands.Choice[str]]:
    """Models the registry knows, pulled ones first (a model that is not on disk cannot load)."""
    entries = conversation.host.registry.entries()
    names = [e.name for e in entries if e.present] + [e.name for e in entries if not e.present]
    return _matching(list(dict.fromkeys(names)), current)


def persona_choices(conversation: Conversation, current: str) -> list[app_commands.Choice[str]]:
    return _matching(conversation.personas.names(), current)


def setting_choices(current: str) -> list[app_commands.Choice[str]]:
    return _matching(SETTING_KEYS, current)


def value_choices(key: str | None, current: str) -> list[app_commands.Choice[str]]:
    """Trigger modes when the key is ``trigger``, group modes for ``group_mode``; others are free-form."""
    if (key or "").lower() in ("trigger", "trigger_mode"):
        return _matching(TRIGGER_MODES, current)
    if (key or "").lower() == "group_mode":
        return _matching(GROUP_MODES, current)
    return _matching(["default"], current) if current and "default".startswith(current.lower()) else []


def build_hearth_group(conversation: Conversation, run: Runner) -> app_commands.Group:
    """The ``/hearth`` group with its subgroups; descriptions come from the command core's help."""

    def about(*path: str, fallback: str) -> str:
        command = conversation.commands.commands.get(path)
        text = command.help if command is not None else fallback
        return text[:100]

    hearth = app_commands.Group(name="hearth", description="Chat with hearth's local model")
    model = app_commands.Group(name="model", description="Models: list, info, load, unload", parent=hearth)
    persona = app_commands.Group(name="persona", description="Who speaks in this room", parent=hearth)
    memory = app_commands.Group(name="memory", description="What hearth remembers of this room", parent=hearth)
    lore = app_commands.Group(name="lore", description="World info for this room", parent=hearth)
    settings = app_commands.Group(name="settings", description="This room's trigger mode and sampling", parent=hearth)

    async def complete_model(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return model_choices(conversation, current)

    async def complete_persona(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return persona_choices(conversation, current)

    # -- model ------------------------------------------------------------------------------

    @model.command(name="list", description=about("model", "list", fallback="list the models"))
    async def model_list(interaction: discord.Interaction) -> None:
        await run(interaction, ["model", "list"])

    @model.command(name="info", description=about("model", "info", fallback="details of a model"))
    @app_commands.describe(name="a model name (default: the active model)")
    @app_commands.autocomplete(name=complete_model)
    async def model_info(interaction: discord.Interaction, name: str | None = None) -> None:
        await run(interaction, ["model", "info", *([name] if name else [])])

    @model.command(name="load", description=about("model", "load", fallback="swap to another model"))
    @app_commands.describe(name="the model to load", now="cancel the reply being written instead of waiting")
    @app_commands.autocomplete(name=complete_model)
    async def model_load(interaction: discord.Interaction, name: str, now: bool = False) -> None:
        await run(interaction, ["model", "load", name, *(["--now"] if now else [])])

    @model.command(name="unload", description=about("model", "unload", fallback="free the model's memory"))
    async def model_unload(interaction: discord.Interaction) -> None:
        await run(interaction, ["model", "unload"])

    # -- persona ----------------------------------------------------------------------------

    @persona.command(name="list", description=about("persona", "list", fallback="list the personas"))
    async def persona_list(interaction: discord.Interaction) -> None:
        await run(interaction, ["persona", "list"])

    @persona.command(name="show", description=about("persona", "show", fallback="describe a persona"))
    @app_commands.describe(name="a persona (default: this room's)")
    @app_commands.autocomplete(name=complete_persona)
    async def persona_show(interaction: discord.Interaction, name: str | None = None) -> None:
        await run(interaction, ["persona", "show", *([name] if name else [])])

    @persona.command(name="set", description=about("persona", "set", fallback="change the room's persona"))
    @app_commands.describe(name="the persona to speak as in this room")
    @app_commands.autocomplete(name=complete_persona)
    async def persona_set(interaction: discord.Interaction, name: str) -> None:
        await run(interaction, ["persona", "set", name])

    @persona.command(name="export", description=about("persona", "export", fallback="export a character card"))
    @app_commands.describe(name="a persona (default: this room's)", json="a JSON card instead of a PNG")
    @app_commands.autocomplete(name=complete_persona)
    async def persona_export(interaction: discord.Interaction, name: str | None = None, json: bool = False) -> None:
        await run(interaction, ["persona", "export", *([name] if name else []), *(["--json"] if json else [])])

    @persona.command(name="import", description=about("persona", "import", fallback="import a character card"))
    @app_commands.describe(
        file="a character card (PNG or JSON) or a persona YAML file",
        replace="overwrite a persona of the same name (built-ins included)",
    )
    async def persona_import(interaction: discord.Interaction, file: discord.Attachment, replace: bool = False) -> None:
        await run(interaction, ["persona", "import", *(["--replace"] if replace else [])], attachments=[file])

    # -- the cast (several characters in one room) ------------------------------------------

    @persona.command(name="cast", description=about("persona", "cast", fallback="the characters in this room"))
    async def persona_cast(interaction: discord.Interaction) -> None:
        await run(interaction, ["persona", "cast"])

    @persona.command(name="add", description=about("persona", "add", fallback="add a character to the cast"))
    @app_commands.describe(name="the persona to add to this room's cast")
    @app_commands.autocomplete(name=complete_persona)
    async def persona_add(interaction: discord.Interaction, name: str) -> None:
        await run(interaction, ["persona", "add", name])

    @persona.command(name="remove", description=about("persona", "remove", fallback="remove a cast member"))
    @app_commands.describe(name="the character to remove from this room's cast")
    @app_commands.autocomplete(name=complete_persona)
    async def persona_remove(interaction: discord.Interaction, name: str) -> None:
        await run(interaction, ["persona", "remove", name])

    @persona.command(name="speak", description=about("persona", "speak", fallback="ask one character to speak"))
    @app_commands.describe(name="the character of this room's cast who should speak now")
    @app_commands.autocomplete(name=complete_persona)
    async def persona_speak(interaction: discord.Interaction, name: str) -> None:
        await run(interaction, ["persona", "speak", name])

    # -- memory -----------------------------------------------------------------------------

    @memory.command(name="show", description=about("memory", "show", fallback="what hearth remembers"))
    async def memory_show(interaction: discord.Interaction) -> None:
        await run(interaction, ["memory", "show"])

    @memory.command(name="reset", description=about("memory", "reset", fallback="forget this room"))
    async def memory_reset(interaction: discord.Interaction) -> None:
        await run(interaction, ["memory", "reset"])

    @memory.command(name="forget-me", description=about("memory", "forget-me", fallback="forget your messages"))
    async def memory_forget_me(interaction: discord.Interaction) -> None:
        await run(interaction, ["memory", "forget-me"])

    @memory.command(name="export", description=about("memory", "export", fallback="this room's memory as JSON"))
    async def memory_export(interaction: discord.Interaction) -> None:
        await run(interaction, ["memory", "export"])

    @memory.command(name="search", description=about("memory", "search", fallback="what hearth would recall"))
    @app_commands.describe(query="words to look for in this room's memory")
    async def memory_search(interaction: discord.Interaction, query: str) -> None:
        await run(interaction, ["memory", "search", *query.split()])

    @memory.command(name="summarize", description=about("memory", "summarize", fallback="compact the history"))
    async def memory_summarize(interaction: discord.Interaction) -> None:
        await run(interaction, ["memory", "summarize"])

    # -- lore -------------------------------------------------------------------------------

    @lore.command(name="list", description=about("lore", "list", fallback="the lore in use here"))
    async def lore_list(interaction: discord.Interaction) -> None:
        await run(interaction, ["lore", "list"])

    @lore.command(name="add", description=about("lore", "add", fallback="add room lore"))
    @app_commands.describe(
        keys="comma-separated words that bring this entry into the prompt",
        text="what the model should know",
        constant="always include it, whatever is said",
    )
    async def lore_add(interaction: discord.Interaction, keys: str, text: str, constant: bool = False) -> None:
        await run(interaction, ["lore", "add", keys, text, *(["--constant"] if constant else [])])

    @lore.command(name="remove", description=about("lore", "remove", fallback="remove room lore"))
    @app_commands.describe(number="the entry's number in /hearth lore list")
    async def lore_remove(interaction: discord.Interaction, number: int) -> None:
        await run(interaction, ["lore", "remove", str(number)])

    # -- settings ---------------------------------------------------------------------------

    @settings.command(name="show", description=about("settings", "show", fallback="this room's settings"))
    async def settings_show(interaction: discord.Interaction) -> None:
        await run(interaction, ["settings", "show"])

    @settings.command(name="set", description=about("settings", "set", fallback="change a room setting"))
    @app_commands.describe(
        key="trigger, group_mode, group_replies, group_chain, or a sampling key such as temperature",
        value="the new value, or 'default'",
    )
    async def settings_set(interaction: discord.Interaction, key: str, value: str) -> None:
        await run(interaction, ["settings", "set", key, value])

    @settings_set.autocomplete("key")
    async def complete_key(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return setting_choices(current)

    @settings_set.autocomplete("value")
    async def complete_value(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return value_choices(getattr(interaction.namespace, "key", None), current)

    # -- room -------------------------------------------------------------------------------

    @hearth.command(name="stats", description=about("stats", fallback="model, speed, queue and uptime"))
    async def stats(interaction: discord.Interaction) -> None:
        await run(interaction, ["stats"])

    @hearth.command(name="regenerate", description=about("regenerate", fallback="write the last reply again"))
    async def regenerate(interaction: discord.Interaction) -> None:
        await run(interaction, ["regenerate"])

    @hearth.command(name="stop", description=about("stop", fallback="stop the reply being written"))
    async def stop(interaction: discord.Interaction) -> None:
        await run(interaction, ["stop"])

    @hearth.command(name="help", description=about("help", fallback="list the commands"))
    async def help_command(interaction: discord.Interaction) -> None:
        await run(interaction, ["help"])

    return hearth


def find_command(group: app_commands.Group, path: str) -> app_commands.Command:
    """``find_command(hearth, "model load")``: the slash command for a path (tests and help)."""
    node: app_commands.Group | app_commands.Command = group
    for word in path.split():
        assert isinstance(node, app_commands.Group)
        found = node.get_command(word)
        if found is None:
            raise KeyError(f"no slash command {path!r}")
        node = found
    assert isinstance(node, app_commands.Command)
    return node
