"""Rights against a real Synapse: power in a room a user made never becomes power over the bot.

Anyone on a homeserver can create a room and hold power level 100 there. That makes them a
room manager of that room (persona, settings, lore, memory) and nothing more: models and the
shared persona library belong to operators, named by id in ``matrix.admins``.
"""

from __future__ import annotations

from typing import Any

import pytest
from nio import AsyncClient

from engine.types import RoomRef

from .harness import collect_events, send_text, skip_seen
from .test_matrix_bot import _answers, group_room

pytestmark = pytest.mark.timeout(240)


async def ask(bot: Any, user: AsyncClient, room_id: str, body: str) -> str:
    """Send a command and return the text of the bot's answer to it."""
    skip_seen(user, room_id)
    sent = await send_text(user, room_id, body)
    events = await collect_events(user, room_id, lambda e: _answers(e, bot.user_id, sent), timeout=60)
    return events[-1]["content"]["body"]


async def test_a_room_owner_can_manage_their_room_but_not_the_bot(matrix_bot, matrix_user):
    mallory, alice, bob = await matrix_user("mallory"), await matrix_user("alice"), await matrix_user("bob")
    bot = await matrix_bot()
    own_room = await group_room(mallory, bot, [bob])  # mallory made it: power level 100 here
    other_room = await group_room(alice, bot, [bob])

    refused = await ask(bot, mallory, own_room, "!hearth model unload")
    assert "operator" in refused and "\n" not in refused
    assert bot.app.host.loaded, "room power unloaded the model for every room"

    import_refused = await ask(bot, mallory, own_room, "!hearth persona import")
    assert "operator" in import_refused

    managed = await ask(bot, mallory, own_room, "!hearth persona set storyteller")
    assert "persona set to" in managed
    own_persona = await bot.app.conversation.persona_for(RoomRef("matrix", own_room))
    other_persona = await bot.app.conversation.persona_for(RoomRef("matrix", other_room))
    assert own_persona.name.lower() == "storyteller"
    assert other_persona.name.lower() != "storyteller", "one room's manager changed another room"

    help_text = await ask(bot, mallory, own_room, "!hearth help")
    assert "model unload" in help_text and "(operator)" in help_text and "(room manager)" in help_text

    bob_refused = await ask(bot, bob, own_room, "!hearth persona set narrator")
    assert "room manager" in bob_refused


async def test_an_operator_on_chat_loads_registered_models_only(matrix_bot, matrix_user, tmp_path):
    ops, bob = await matrix_user("ops"), await matrix_user("bob")
    bot = await matrix_bot(admins=[ops.user_id])
    room_id = await group_room(ops, bot, [bob])
    real_file = tmp_path / "elsewhere.gguf"
    real_file.write_bytes(b"GGUF" + b"\0" * 64)

    paths = (str(real_file), "/no/such/file.gguf", "/etc/passwd", "/dev/zero", "../../etc/passwd")
    answers = [(await ask(bot, ops, room_id, f"!hearth model load {path}")).replace(path, "PATH") for path in paths]
    assert len(set(answers)) == 1, f"the refusals differ, so they tell which files exist: {answers}"
    assert "unknown model 'PATH'" in answers[0]
    assert bot.app.host.entry is not None and bot.app.host.entry.name == "smollm2-135m-instruct"

    unloaded = await ask(bot, ops, room_id, "!hearth model unload")
    assert "unloaded" in unloaded and not bot.app.host.loaded
