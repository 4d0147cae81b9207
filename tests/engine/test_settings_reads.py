"""A room's settings are read from the database once when a message arrives and once per reply turn.

The trigger policy, the persona, its preferred model, the sampling and the room's lore all
depend on them; they used to read them separately, up to six times per reply. Real model,
real SQLite: the store's own method is wrapped to count the reads.
"""

from __future__ import annotations

from engine.types import Author, IncomingMessage, RoomRef
from personas import LoreEntry

ROOM = RoomRef("test", "reads")
ALICE = Author("u1", "Alice")
LORE = "The lighthouse on Quill Point is painted red."


async def test_one_settings_read_per_message_and_per_turn(app, monkeypatch):
    conv = app.conversation
    room = await conv.room(ROOM)
    lore = LoreEntry(keys=["lighthouse"], content=LORE).model_dump(mode="json")
    await app.store.update_room_settings(room.conversation_id, sampling={"max_tokens": 8}, extra={"lore": [lore]})

    reads: list[int] = []
    real_read = app.store.room_settings

    async def counted_read(conversation_id: int):
        reads.append(conversation_id)
        return await real_read(conversation_id)

    monkeypatch.setattr(app.store, "room_settings", counted_read)

    # not addressed: the wake word decides, so the trigger policy needs the persona as well as the mode
    text = "hey hearth, tell me about the lighthouse"
    outcome = await conv.handle(IncomingMessage(ROOM, ALICE, text, "m1", addressed=False))
    assert outcome.kind == "reply"
    assert len(reads) == 1, f"the trigger policy read the room's settings {len(reads)} times"

    reads.clear()
    reply = await outcome.admission.ticket.reply
    await reply.text()
    await conv.scheduler.wait_idle()
    assert len(reads) == 1, f"one reply turn read the room's settings {len(reads)} times"

    # the one snapshot really fed the turn: the room's lore and its sampling override were used
    prompt = room.last_prompt
    assert prompt is not None and LORE in "\n".join(m.content for m in prompt.messages)
    assert reply.stats is not None and reply.stats.completion_tokens < 48, "the room's max_tokens 8, not the model's 48"
