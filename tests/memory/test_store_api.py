"""Every public store method, round-tripped through real SQLite and PostgreSQL, and its failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from errors import StorageError
from memory import DEFAULT_DATABASE_URL, ConversationKey, MemoryStore, RoomSettings


async def say(store: MemoryStore, room: int, text: str, *, author: str = "u1", pid: str | None = None):
    return await store.append(
        room, role="user", author_id=author, author_name=author.upper(), text=text, platform_message_id=pid
    )


async def test_conversations_get_or_create_and_thread_is_its_own_room(store):
    assert await store.find_conversation(ConversationKey("discord", "c1")) is None
    room = await store.conversation_id(ConversationKey("discord", "c1"))
    thread = await store.conversation_id(ConversationKey("discord", "c1", "t9"))
    other_platform = await store.conversation_id(ConversationKey("matrix", "c1"))
    assert len({room, thread, other_platform}) == 3
    assert await store.conversation_id(ConversationKey("discord", "c1")) == room
    assert await store.conversation_id(ConversationKey("discord", "c1", None)) == room
    assert await store.find_conversation(ConversationKey("discord", "c1", "t9")) == thread
    assert await store.conversations() == [
        (room, ConversationKey("discord", "c1")),
        (thread, ConversationKey("discord", "c1", "t9")),
        (other_platform, ConversationKey("matrix", "c1")),
    ]


async def test_append_and_read_back_every_field(store):
    room = await store.conversation_id(ConversationKey("matrix", "!r:x"))
    before = datetime.now(UTC)
    sent = await store.append(
        room,
        role="assistant",
        author_id="bot",
        author_name="Hearth",
        text="hello",
        platform_message_id="$e1",
        token_count=7,
    )
    (read,) = await store.messages(room)
    assert read == sent, "what append returns is exactly what a later read returns"
    assert (read.role, read.author_id, read.author_name, read.text) == ("assistant", "bot", "Hearth", "hello")
    assert (read.platform_message_id, read.token_count, read.edited, read.deleted) == ("$e1", 7, False, False)
    assert read.conversation_id == room and read.edited_at is None
    assert read.created_at.tzinfo is not None and read.created_at.utcoffset().total_seconds() == 0
    assert before <= read.created_at <= datetime.now(UTC)
    assert await store.get_message(room, "$e1") == read
    assert await store.get_message(room, "$nope") is None
    with pytest.raises(ValueError, match="role"):
        await store.append(room, role="narrator", author_id="x", author_name="X", text="no")


async def test_message_windows(store):
    room = await store.conversation_id(ConversationKey("console", "w"))
    ids = [(await say(store, room, f"m{i}", pid=f"p{i}")).id for i in range(6)]
    assert ids == sorted(ids)
    assert [m.text for m in await store.messages(room)] == [f"m{i}" for i in range(6)]
    assert [m.text for m in await store.messages(room, last=2)] == ["m4", "m5"]
    assert [m.text for m in await store.messages(room, last=10)] == [f"m{i}" for i in range(6)]
    assert await store.messages(room, last=0) == []
    assert [m.text for m in await store.messages(room, after_id=ids[3])] == ["m4", "m5"]
    assert [m.text for m in await store.messages(room, after_id=ids[1], last=1)] == ["m5"]
    await store.delete_message(room, "p5")
    assert [m.text for m in await store.messages(room, last=2)] == ["m3", "m4"]
    assert [m.text for m in await store.messages(room, last=2, include_deleted=True)] == ["m4", "m5"]
    assert await store.count_messages(room) == 5
    with pytest.raises(ValueError):
        await store.messages(room, last=-1)


async def test_token_counts_and_platform_ids(store):
    room = await store.conversation_id(ConversationKey("console", "t"))
    reply = await store.append(
        room, role="assistant", author_id="bot", author_name="B", text="draft", token_count=42, platform_message_id="s1"
    )
    stored = await store.get_message(room, "s1")
    assert stored is not None and stored.id == reply.id and stored.token_count == 42
    edited = await store.edit_message(room, "s1", "final")
    assert edited.token_count is None, "an edit invalidates the cached count"


async def test_edit_and_delete_of_a_covered_message_make_the_summary_stale(store):
    room = await store.conversation_id(ConversationKey("matrix", "!s"))
    ids = [(await say(store, room, f"m{i}", pid=f"p{i}")).id for i in range(4)]
    saved = await store.save_summary(room, "m0 and m1 happened", ids[1])
    assert (saved.text, saved.covers_through_id, saved.stale) == ("m0 and m1 happened", ids[1], False)

    await store.edit_message(room, "p3", "not covered")
    assert not (await store.summary(room)).stale, "an edit after the covered range changes nothing"
    edited = await store.edit_message(room, "p1", "m1, corrected")
    assert edited.edited and edited.edited_at is not None and edited.text == "m1, corrected"
    assert (await store.get_message(room, "p1")).text == "m1, corrected"
    assert (await store.summary(room)).stale

    await store.save_summary(room, "rebuilt", ids[1])
    assert not (await store.summary(room)).stale
    await store.delete_message(room, "p2")
    assert not (await store.summary(room)).stale
    deleted = await store.delete_message(room, "p0")
    assert deleted.deleted and (await store.summary(room)).stale
    assert [m.text for m in await store.messages(room)] == ["m1, corrected", "not covered"]
    assert len(await store.messages(room, include_deleted=True)) == 4

    assert await store.edit_message(room, "missing", "x") is None
    assert await store.delete_message(room, "missing") is None
    assert await store.delete_message_by_id(room, ids[3]) is not None
    assert await store.count_messages(room) == 1


async def test_summary_lifecycle(store):
    room = await store.conversation_id(ConversationKey("console", "s"))
    assert await store.summary(room) is None
    first = await store.save_summary(room, "one", 1)
    second = await store.save_summary(room, "two", 5)
    assert second.updated_at >= first.updated_at
    assert await store.summary(room) == second
    await store.clear_summary(room)
    assert await store.summary(room) is None


async def test_room_settings(store):
    room = await store.conversation_id(ConversationKey("discord", "g"))
    assert await store.room_settings(room) == RoomSettings()
    updated = await store.update_room_settings(room, persona="narrator", sampling={"temperature": 0.5})
    assert updated == RoomSettings(persona="narrator", sampling={"temperature": 0.5})
    updated = await store.update_room_settings(room, trigger_mode="mention", extra={"lore": ["a", "b"]})
    assert updated == RoomSettings("narrator", "mention", {"temperature": 0.5}, {"lore": ["a", "b"]})
    assert await store.room_settings(room) == updated
    cleared = await store.update_room_settings(room, persona=None, sampling=None)
    assert cleared == RoomSettings(None, "mention", {}, {"lore": ["a", "b"]})
    with pytest.raises(ValueError, match="colour"):
        await store.update_room_settings(room, colour="red")
    with pytest.raises(ValueError, match="JSON"):
        await store.update_room_settings(room, extra={"when": datetime.now(UTC)})
    with pytest.raises(ValueError):
        await store.update_room_settings(room, sampling=[1, 2])
    assert await store.room_settings(room) == cleared, "a refused update changes nothing"


async def test_forget_author_and_reset(store):
    room = await store.conversation_id(ConversationKey("discord", "f"))
    neighbour = await store.conversation_id(ConversationKey("discord", "other"))
    for i in range(6):
        await say(store, room, f"m{i}", author="ann" if i % 2 == 0 else "bob", pid=f"p{i}")
    await say(store, neighbour, "ann elsewhere", author="ann")
    last = (await store.messages(room, last=1))[0]
    await store.save_summary(room, "ann and bob talked", last.id)
    await store.update_room_settings(room, persona="narrator")

    assert await store.forget_author(room, "ann") == 3
    assert {m.author_id for m in await store.messages(room, include_deleted=True)} == {"bob"}
    assert (await store.summary(room)).stale, "the summary may still quote ann"
    assert [m.text for m in await store.messages(neighbour)] == ["ann elsewhere"], "other rooms are untouched"
    assert await store.forget_author(room, "nobody") == 0

    assert await store.reset(room) == 3
    assert await store.messages(room, include_deleted=True) == []
    assert await store.summary(room) is None
    assert (await store.room_settings(room)).persona == "narrator", "reset forgets talk, not configuration"
    assert await store.count_messages(neighbour) == 1


async def test_export_is_json_with_everything(store):
    room = await store.conversation_id(ConversationKey("matrix", "!e", "$thread"))
    first = await say(store, room, "hi 👋", pid="p1")
    await say(store, room, "gone", pid="p2")
    await store.delete_message(room, "p2")
    await store.append(room, role="assistant", author_id="bot", author_name="Hearth", text="hello", token_count=3)
    await store.save_summary(room, "a greeting", first.id)
    await store.update_room_settings(room, persona="companion", sampling={"top_p": 0.9}, extra={"k": 1})

    exported = json.loads(json.dumps(await store.export(room)))
    assert exported["key"] == {"platform": "matrix", "room_id": "!e", "thread_id": "$thread"}
    assert exported["conversation_id"] == room
    assert exported["settings"] == {
        "persona": "companion",
        "trigger_mode": None,
        "sampling": {"top_p": 0.9},
        "extra": {"k": 1},
    }
    assert exported["summary"]["text"] == "a greeting" and exported["summary"]["covers_through_id"] == first.id
    assert [(m["role"], m["text"]) for m in exported["messages"]] == [("user", "hi 👋"), ("assistant", "hello")]
    assert exported["messages"][1]["token_count"] == 3
    stamp = datetime.fromisoformat(exported["messages"][0]["created_at"])
    assert stamp == first.created_at and stamp.tzinfo is not None
    with pytest.raises(StorageError):
        await store.export(room + 1000)


async def test_platform_state(store):
    assert await store.get_state("matrix", "next_batch") is None
    await store.set_state("matrix", "next_batch", "s1")
    await store.set_state("matrix", "next_batch", "s2")
    await store.set_state("matrix", "device_id", "DEV")
    assert await store.get_state("matrix", "next_batch") == "s2"
    assert await store.get_state("matrix", "device_id") == "DEV"
    assert await store.get_state("discord", "next_batch") is None


async def test_everything_survives_a_restart(db_url, db_path, backend):
    store = MemoryStore(db_url)
    await store.start()
    if backend == "sqlite":
        assert db_path.is_file(), "start() creates the missing data folder and the file"
    room = await store.conversation_id(ConversationKey("discord", "c1"))
    first = await say(store, room, "remember me", pid="p1")
    await say(store, room, "and me")
    await store.save_summary(room, "someone wanted to be remembered", first.id)
    await store.update_room_settings(room, persona="narrator", trigger_mode="always", sampling={"temperature": 0.5})
    await store.set_state("matrix", "next_batch", "s123")
    await store.close()
    await store.close()  # closing twice is harmless

    again = MemoryStore(db_url)
    await again.start()
    try:
        assert await again.find_conversation(ConversationKey("discord", "c1")) == room
        assert [m.text for m in await again.messages(room)] == ["remember me", "and me"]
        assert (await again.messages(room))[0] == first
        summary = await again.summary(room)
        assert (summary.text, summary.covers_through_id, summary.stale) == (
            "someone wanted to be remembered",
            first.id,
            False,
        )
        assert await again.room_settings(room) == RoomSettings("narrator", "always", {"temperature": 0.5}, {})
        assert await again.get_state("matrix", "next_batch") == "s123"
    finally:
        await again.close()


def test_constructor_does_no_io(tmp_path):
    MemoryStore(f"sqlite+aiosqlite:///{tmp_path}/never/created.db")
    assert not (tmp_path / "never").exists()
    assert DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///data/hearth.db"


async def test_a_store_that_is_not_started_says_so(db_url):
    store = MemoryStore(db_url)
    with pytest.raises(StorageError, match="not started"):
        await store.messages(1)
    await store.start()
    await store.start()  # idempotent
    await store.close()
    with pytest.raises(StorageError, match="not started"):
        await store.append(1, role="user", author_id="u", author_name="U", text="after close")


async def test_database_failures_become_storage_errors(store):
    with pytest.raises(StorageError, match="append") as caught:
        await store.append(999, role="user", author_id="u", author_name="U", text="no such room")
    assert caught.value.original is not None, "the foreign exception is kept for the log"
    assert "no such room" not in str(caught.value), "messages never carry SQL parameters (user text)"


async def test_a_file_that_is_not_a_database_is_a_storage_error(db_path, sqlite_url):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="cannot open"):
        await MemoryStore(sqlite_url).start()


async def test_errors_never_show_the_password():
    url = "postgresql+asyncpg://hearth:s3cr3t-pw@127.0.0.1:1/hearth"
    store = MemoryStore(url)
    assert "s3cr3t-pw" not in store.safe_url
    with pytest.raises(StorageError) as caught:
        await store.start()  # fails: no asyncpg installed, or nothing listening on port 1
    assert "s3cr3t-pw" not in str(caught.value) and "s3cr3t-pw" not in repr(caught.value)
    with pytest.raises(StorageError) as caught:
        MemoryStore("postgresql+asyncpg://hearth:s3cr3t-pw@host:notaport/db")
    assert "s3cr3t-pw" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__, "no traceback shows the raw URL"
