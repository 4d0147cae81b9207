"""The command core: parsing, checks before callbacks, one-line errors."""

from __future__ import annotations

import pytest

from engine.commands.core import Command, CommandContext, CommandCore, Right, tokenize
from engine.types import Author, RoomRef
from errors import CommandError

ROOM = RoomRef("test", "room")
ADMIN = CommandContext(ROOM, Author("1", "Ada", is_operator=True))
MANAGER = CommandContext(ROOM, Author("3", "Mo", is_room_manager=True))
USER = CommandContext(ROOM, Author("2", "Bob"))


@pytest.fixture
def core():
    calls: list[list[str]] = []

    async def record(ctx, args):
        calls.append(args)
        return "done " + " ".join(args)

    async def crash(ctx, args):
        raise RuntimeError("boom with secret internals")

    core = CommandCore()
    core.register(
        [
            Command(("persona", "set"), record, "set", "NAME", right=Right.ROOM_MANAGER, min_args=1, max_args=1),
            Command(("model", "unload"), record, "unload", right=Right.OPERATOR),
            Command(("persona", "list"), record, "list"),
            Command(("crash",), crash, "crash"),
        ]
    )
    core.calls = calls
    return core


def test_tokenize_quotes_and_errors():
    assert tokenize('persona set "Old Sage"') == ["persona", "set", "Old Sage"]
    assert tokenize("memory search what's my cat's name") == ["memory", "search", "what's", "my", "cat's", "name"]
    assert tokenize('lore add "dragon" it\'s #red') == ["lore", "add", "dragon", "it's", "#red"]
    with pytest.raises(CommandError, match="could not parse"):
        tokenize('persona set "unclosed')
    with pytest.raises(CommandError, match="too long"):
        tokenize("x" * 5000)


async def test_rights_are_checked_before_the_callback_and_refusals_name_the_right(core):
    ok = await core.process("persona set storyteller", ADMIN)
    assert ok.ok and ok.text == "done storyteller"
    assert (await core.process("persona set narrator", MANAGER)).ok
    refused = await core.process("persona set storyteller", USER)
    assert not refused.ok and refused.ephemeral and "room manager" in refused.text and "\n" not in refused.text
    bot_wide = await core.process("model unload", MANAGER)
    assert not bot_wide.ok and "operator" in bot_wide.text
    assert (await core.process("model unload", ADMIN)).ok
    assert core.calls == [["storyteller"], ["narrator"], []]


def test_help_marks_each_privileged_command_with_its_right(core):
    lines = core.help_text().splitlines()

    def line(name: str) -> str:
        return next(text for text in lines if text.startswith(name + " "))

    assert line("model unload").endswith("(operator)")
    assert line("persona set").endswith("(room manager)")
    assert not line("persona list").endswith(")")


async def test_unknown_and_usage_errors(core):
    result = await core.process("persona dance", USER)
    assert not result.ok and "persona list" in result.text
    result = await core.process("persona set", ADMIN)
    assert not result.ok and result.text == "usage: persona set NAME"
    assert (await core.process("nothing", USER)).text.startswith("unknown command")


async def test_crash_is_one_line_without_internals(core):
    result = await core.process("crash", ADMIN)
    assert not result.ok
    assert "boom" not in result.text and "\n" not in result.text


async def test_injection_in_arguments_is_just_text(core):
    result = await core.process('persona list "; model load x" @everyone', USER)
    assert result.ok
    assert core.calls == [["; model load x", "@everyone"]]
