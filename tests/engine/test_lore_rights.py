"""Room managers add plain lore keys; regex keys, which can stall every room, need an operator.

Pure rights policy: runs over a FakeBackend (tests/engine/conftest.py), no model loaded.
"""

from __future__ import annotations

from engine.commands.core import CommandContext
from engine.types import Author, RoomRef

ROOM = RoomRef("test", "lore-rights")
MANAGER = Author("m", "Mod", is_room_manager=True)
OPERATOR = Author("o", "Ops", is_operator=True)


async def test_regex_lore_keys_need_an_operator(fake_app):
    conv = fake_app[0].conversation
    refused = await conv.run_command('lore add "/(a+)+$/" "Catastrophic backtracking"', CommandContext(ROOM, MANAGER))
    assert not refused.ok and "operator" in refused.text and "\n" not in refused.text
    assert "no lore here" in (await conv.run_command("lore list", CommandContext(ROOM, MANAGER))).text
    plain = await conv.run_command('lore add dragon "Dragons breathe frost."', CommandContext(ROOM, MANAGER))
    assert plain.ok, plain.text
    regex = await conv.run_command('lore add "/drag(on|ons)/i" "Dragons again."', CommandContext(ROOM, OPERATOR))
    assert regex.ok, regex.text
