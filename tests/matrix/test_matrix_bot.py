"""hearth's Matrix bot against a real Synapse, with a second nio client playing the user.

Replies come from the real SmolLM2 model. Each test registers fresh users and its own bot
account, so tests share only the homeserver.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nio import AsyncClient, MegolmEvent, TypingNoticeEvent

from adapters.matrix_reply import deliver_reply
from adapters.rendering import UNFINISHED_MARKER
from engine.reply import Done, ReplyStream, TextChunk
from engine.types import RoomRef

from .bot import Bot, BotProcess, bot_config
from .harness import collect_events, create_room, is_edit, relation, send_text, skip_seen, wait_for_member
from .synapse import SynapseServer

pytestmark = pytest.mark.timeout(240)

BotFactory = Callable[..., Awaitable[Bot]]


def mention(bot_id: str) -> dict[str, Any]:
    return {"m.mentions": {"user_ids": [bot_id]}}


def from_bot(bot_id: str) -> Callable[[Any], bool]:
    return lambda event: event.source.get("sender") == bot_id and event.source.get("type") == "m.room.message"


def final_reply_to(bot_id: str, first_event_ids: set[str]) -> Callable[[Any], bool]:
    """The bot's finished reply: its last edit (no "still writing" marker) of one of ``first_event_ids``."""

    def check(event: Any) -> bool:
        if not from_bot(bot_id)(event):
            return False
        content = event.source["content"]
        if is_edit(event):
            body = content.get("m.new_content", {}).get("body", "")
            return relation(event).get("event_id") in first_event_ids and not body.endswith(UNFINISHED_MARKER)
        return False

    return check


async def reply_events(user: AsyncClient, room_id: str, bot_id: str, question: str) -> list[dict[str, Any]]:
    """Every event of the bot's streamed reply to ``question``: the first event, then its edits."""
    first: set[str] = set()

    def done(event: Any) -> bool:
        if _answers(event, bot_id, question) and not is_edit(event):
            first.add(event.source["event_id"])
            return not event.source["content"]["body"].endswith(UNFINISHED_MARKER)  # short reply, no edits
        return final_reply_to(bot_id, first)(event)

    events = await collect_events(user, room_id, done, timeout=90)
    return [e for e in events if e.get("sender") == bot_id]


async def group_room(owner: AsyncClient, bot: Bot, others: list[AsyncClient] = (), **kwargs: Any) -> str:
    """A room with the bot and at least three members, so nothing counts as a DM."""
    from .harness import join, wait_for_invite

    room_id = await create_room(owner, invite=[bot.user_id, *[o.user_id for o in others]], **kwargs)
    for other in others:
        await wait_for_invite(other, room_id)
        await join(other, room_id)
    await wait_for_member(owner, room_id, bot.user_id)
    skip_seen(owner, room_id)
    return room_id


async def test_a_mention_gets_a_streamed_reply_and_plain_chatter_does_not(matrix_bot, matrix_user):
    bot = await matrix_bot()
    alice, bob = await matrix_user("alice"), await matrix_user("bob")
    room_id = await group_room(alice, bot, [bob])
    await send_text(alice, room_id, "just chatting with bob here")
    question = await send_text(alice, room_id, f"{bot.user_id}: what is a hearth?", **mention(bot.user_id))

    events = await reply_events(alice, room_id, bot.user_id, question)

    first = events[0]
    assert first["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == question
    edits = [e for e in events if e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"]
    assert edits, "the reply was not streamed as edits"
    assert all(e["content"]["m.relates_to"]["event_id"] == first["event_id"] for e in edits)
    final = edits[-1]["content"]["m.new_content"]["body"]
    assert final.strip() and not final.endswith(UNFINISHED_MARKER)
    assert all(e["content"].get("m.mentions") == {} for e in events)
    replied_to = {e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") for e in events}
    assert replied_to - {None} == {question}, "the unaddressed message got a reply"
    stored = await bot.app.store.messages((await bot.app.conversation.room(RoomRef("matrix", room_id))).conversation_id)
    assert [m.text for m in stored if m.role == "user"] == ["just chatting with bob here", "what is a hearth?"]
    assert stored[-1].role == "assistant" and stored[-1].text == final.strip()


async def test_a_thread_is_its_own_conversation_and_the_reply_stays_in_it(matrix_bot, matrix_user):
    bot = await matrix_bot()
    alice, bob = await matrix_user("alice"), await matrix_user("bob")
    room_id = await group_room(alice, bot, [bob])
    root = await send_text(alice, room_id, "Thread: favourite fruit")
    threaded = {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": root},
        },
        **mention(bot.user_id),
    }
    question = await send_text(alice, room_id, f"{bot.user_id} which fruit is best?", **threaded)

    events = await reply_events(alice, room_id, bot.user_id, question)

    relates = events[0]["content"]["m.relates_to"]
    assert relates["rel_type"] == "m.thread" and relates["event_id"] == root
    conversation = bot.app.conversation
    thread_room = await conversation.room(RoomRef("matrix", room_id, root))
    main_room = await conversation.room(RoomRef("matrix", room_id))
    assert thread_room.conversation_id != main_room.conversation_id
    thread_texts = [m.text for m in await bot.app.store.messages(thread_room.conversation_id)]
    main_texts = [m.text for m in await bot.app.store.messages(main_room.conversation_id)]
    assert "which fruit is best?" in thread_texts and "which fruit is best?" not in main_texts
    assert main_texts == ["Thread: favourite fruit"]

    # An edit does not name its thread; memory still finds the threaded message and follows it.
    edit = {
        "m.new_content": {"msgtype": "m.text", "body": "which berry is best?"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": question},
    }
    marker = await send_text(alice, room_id, "* which berry is best?", **edit)
    await collect_events(alice, room_id, lambda e: e.source.get("event_id") == marker, timeout=30)
    for _ in range(50):
        stored = await bot.app.store.get_message(thread_room.conversation_id, question)
        if stored is not None and stored.text == "which berry is best?":
            break
        await asyncio.sleep(0.1)
    assert stored is not None and stored.text == "which berry is best?"


async def test_every_message_in_a_dm_is_answered(matrix_bot, matrix_user):
    bot = await matrix_bot(with_token=True)
    assert bot.adapter.client.device_id == bot.account.device_id, "the token's own device is used"
    alice = await matrix_user("alice")
    room_id = await create_room(alice, invite=[bot.user_id], is_direct=True)
    await wait_for_member(alice, room_id, bot.user_id)
    skip_seen(alice, room_id)
    typing: list[list[str]] = []

    async def on_typing(room: Any, event: TypingNoticeEvent) -> None:
        if room.room_id == room_id:
            typing.append(list(event.users))

    alice.add_ephemeral_callback(on_typing, TypingNoticeEvent)
    question = await send_text(alice, room_id, "hello, are you there?")

    events = await reply_events(alice, room_id, bot.user_id, question)

    assert events and events[0]["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == question
    assert any(bot.user_id in users for users in typing), f"no typing notification from the bot: {typing}"


async def test_model_load_is_refused_for_a_member_and_done_for_an_operator(matrix_bot, matrix_user, gemma_path):
    admin, member = await matrix_user("admin"), await matrix_user("member")
    bot = await matrix_bot(admins=[admin.user_id])
    room_id = await group_room(admin, bot, [member])
    skip_seen(member, room_id)

    refused = await send_text(member, room_id, "!hearth model load gemma-3-270m")
    events = await collect_events(member, room_id, lambda e: _answers(e, bot.user_id, refused), timeout=60)
    notice = events[-1]["content"]
    assert notice["msgtype"] == "m.notice" and "operator" in notice["body"]
    assert bot.app.host.entry.name != "gemma-3-270m"

    skip_seen(admin, room_id)
    accepted = await send_text(admin, room_id, "!hearth model load gemma-3-270m")
    answers: list[str] = []

    def finished(event: Any) -> bool:
        if _answers(event, bot.user_id, accepted):
            answers.append(event.source["content"]["body"])
            return any(word in answers[-1].lower() for word in (" done ", "error", "fail", "not enough"))
        return False

    await collect_events(admin, room_id, finished, timeout=120)
    assert any("loading" in text.lower() for text in answers)
    assert "gemma-3-270m" in answers[-1]
    assert bot.app.host.entry.name == "gemma-3-270m"


def _answers(event: Any, bot_id: str, question: str) -> bool:
    return from_bot(bot_id)(event) and relation(event).get("m.in_reply_to", {}).get("event_id") == question


def _notifications(synapse: SynapseServer, token: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{synapse.url}/_matrix/client/v3/notifications?limit=50", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["notifications"]


async def test_room_in_model_output_pings_nobody(matrix_bot, matrix_user, synapse):
    bot = await matrix_bot()
    alice, bob = await matrix_user("alice"), await matrix_user("bob")
    # The bot may notify the room (power 100), so only hearth's own defusing stands between it and a ping.
    power = {"users": {bot.user_id: 100}}
    room_id = await group_room(alice, bot, [bob], power_level_override=power)
    await wait_for_member(bob, room_id, bot.user_id)

    # Control: a raw event from the bot's account with @room does ping, so the check below can fail.
    raw = await bot.adapter.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "@room raw"})
    stream = ReplyStream()
    for chunk in ("Attention @room: ", "the meeting ", "moved to noon, @everyone."):
        stream.push(TextChunk(chunk))
    stream.push(Done())
    future = stream._loop.create_future()
    future.set_result(stream)
    reply = await deliver_reply(bot.adapter.client, room_id, future, reply_to=None, thread=None, edit_interval=0.2)
    await collect_events(bob, room_id, lambda e: e.source.get("event_id") == reply.event_id, timeout=30)

    highlights = {
        n["event"]["event_id"]
        for n in _notifications(synapse, bob.account.access_token)
        if any(a == {"set_tweak": "highlight"} or a == {"set_tweak": "highlight", "value": True} for a in n["actions"])
    }
    assert raw.event_id in highlights, "control event did not ping: the check cannot tell"
    assert reply.event_id not in highlights
    seen = await collect_events(bob, room_id, lambda e: is_edit(e), timeout=30)
    body = seen[-1]["content"]["m.new_content"]["body"]
    assert "@room" not in body and "@everyone" not in body and "meeting" in body
    assert seen[-1]["content"]["m.mentions"] == {}


async def test_an_encrypted_room_round_trip(matrix_bot, matrix_user):
    bot = await matrix_bot(encryption=True)
    alice = await matrix_user("alice")
    room_id = await create_room(alice, invite=[bot.user_id], is_direct=True, encrypted=True)
    await wait_for_member(alice, room_id, bot.user_id)
    skip_seen(alice, room_id)
    question = await send_text(alice, room_id, "hello from an encrypted room")

    events = await collect_events(
        alice, room_id, lambda e: isinstance(e, MegolmEvent) or _answers(e, bot.user_id, question), timeout=90
    )

    last = events[-1]
    assert last.get("type") == "m.room.message", f"the bot's reply could not be decrypted: {last}"
    assert last["content"]["body"].strip()
    room = await bot.app.conversation.room(RoomRef("matrix", room_id))
    texts = [m.text for m in await bot.app.store.messages(room.conversation_id)]
    assert "hello from an encrypted room" in texts


async def test_homeserver_restart_is_survived(matrix_bot, matrix_user, synapse):
    bot = await matrix_bot()
    alice = await matrix_user("alice")
    room_id = await create_room(alice, invite=[bot.user_id], is_direct=True)
    await wait_for_member(alice, room_id, bot.user_id)

    synapse.stop()
    synapse.start()
    skip_seen(alice, room_id)
    question = await send_text(alice, room_id, "are you still there after the restart?")

    events = await reply_events(alice, room_id, bot.user_id, question)
    assert events[0]["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == question


async def test_a_restarted_bot_answers_what_it_missed_exactly_once(
    synapse, matrix_account, matrix_user, tmp_path, smol_path
):
    account = matrix_account("hearth")
    process = BotProcess(bot_config(synapse, account, tmp_path), tmp_path)
    await process.start()
    try:
        alice = await matrix_user("alice")
        room_id = await create_room(alice, invite=[account.user_id], is_direct=True)
        await wait_for_member(alice, room_id, account.user_id)
        skip_seen(alice, room_id)
        before = await send_text(alice, room_id, "first question, before the restart")
        await reply_events(alice, room_id, account.user_id, before)

        assert await process.stop() == 0, process.tail()
        missed = await send_text(alice, room_id, "second question, while you were away")
        await process.start()

        await reply_events(alice, room_id, account.user_id, missed)
        # Give a double answer (to either question) time to show up, then count.
        late = await send_text(alice, room_id, "third question, to mark the end")
        await reply_events(alice, room_id, account.user_id, late)
    finally:
        await process.kill()

    from .harness import seen_events

    firsts = [e.source for e in seen_events(alice, room_id) if from_bot(account.user_id)(e) and not is_edit(e)]
    targets = [relation_of(e) for e in firsts]
    assert targets.count(before) == 1, process.tail()
    assert targets.count(missed) == 1, process.tail()
    assert targets.count(late) == 1


def relation_of(source: dict[str, Any]) -> str | None:
    return source.get("content", {}).get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")


async def _upload(user: AsyncClient, data: bytes, content_type: str, filename: str) -> str:
    import io

    from nio import UploadResponse

    response, _ = await user.upload(io.BytesIO(data), content_type, filename, filesize=len(data))
    assert isinstance(response, UploadResponse), response
    return response.content_uri


async def test_a_text_file_is_read_and_other_media_gets_a_polite_refusal(matrix_bot, matrix_user):
    bot = await matrix_bot()
    alice = await matrix_user("alice")
    room_id = await create_room(alice, invite=[bot.user_id], is_direct=True)
    await wait_for_member(alice, room_id, bot.user_id)
    skip_seen(alice, room_id)
    notes = b"Shopping list: apples, flour, candles.\n"
    url = await _upload(alice, notes, "text/plain", "list.txt")
    info = {"mimetype": "text/plain", "size": len(notes)}
    document = await send_text(alice, room_id, "list.txt", msgtype="m.file", url=url, info=info)
    await reply_events(alice, room_id, bot.user_id, document)
    room = await bot.app.conversation.room(RoomRef("matrix", room_id))
    stored = [m.text for m in await bot.app.store.messages(room.conversation_id) if m.role == "user"]
    assert any("Shopping list: apples, flour, candles." in text for text in stored)

    png = await _upload(alice, b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png", "cat.png")
    picture = await send_text(alice, room_id, "cat.png", msgtype="m.image", url=png, info={"mimetype": "image/png"})
    events = await collect_events(alice, room_id, lambda e: _answers(e, bot.user_id, picture), timeout=60)
    assert "can't read that" in events[-1]["content"]["body"]


async def _upload_encrypted(user: AsyncClient, data: bytes, content_type: str, filename: str) -> dict[str, Any]:
    """Upload ``data`` encrypted; returns the event's ``file`` object (url, key, iv, hashes)."""
    import io

    from nio import UploadResponse

    response, keys = await user.upload(io.BytesIO(data), content_type, filename, encrypt=True, filesize=len(data))
    assert isinstance(response, UploadResponse), response
    return {"url": response.content_uri, **keys}


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_a_command_replying_to_a_card_imports_it(matrix_bot, matrix_user, fixtures_dir, encrypted):
    """A Matrix command carries no file, so ``persona import`` takes the file it replies to."""
    admin, member = await matrix_user("admin"), await matrix_user("member")
    bot = await matrix_bot(encryption=encrypted, admins=[admin.user_id])
    room_id = await group_room(admin, bot, [member], encrypted=encrypted)
    card = (fixtures_dir / "Seraphina.png").read_bytes()
    info = {"mimetype": "image/png", "size": len(card)}
    if encrypted:
        file = await _upload_encrypted(admin, card, "image/png", "Seraphina.png")
        upload = await send_text(admin, room_id, "Seraphina.png", msgtype="m.image", file=file, info=info)
    else:
        url = await _upload(admin, card, "image/png", "Seraphina.png")
        upload = await send_text(admin, room_id, "Seraphina.png", msgtype="m.image", url=url, info=info)
    reply_to_upload = {"m.relates_to": {"m.in_reply_to": {"event_id": upload}}}

    async def answer(user: AsyncClient, body: str, **content: Any) -> str:
        sent = await send_text(user, room_id, body, **content)
        events = await collect_events(user, room_id, lambda e: _answers(e, bot.user_id, sent), timeout=60)
        return events[-1]["content"]["body"]

    skip_seen(member, room_id)
    refused = await answer(member, "!hearth persona import", **reply_to_upload)
    assert "operator" in refused
    skip_seen(admin, room_id)
    nothing = await answer(admin, "!hearth persona import")
    assert "reply to one" in nothing, "a command without a file says how to give it one"
    imported = await answer(admin, "!hearth persona import", **reply_to_upload)
    assert "imported Seraphina" in imported
    assert "seraphina" in [name.lower() for name in bot.app.conversation.personas.names()]


async def test_invites_from_other_users_are_declined(matrix_bot, matrix_user):
    bot = await matrix_bot(allowed_inviters=["@friend-*:*"])
    stranger = await matrix_user("stranger")
    room_id = await create_room(stranger, invite=[bot.user_id])
    from .harness import sync_once

    for _ in range(40):
        await sync_once(stranger, timeout_ms=250)
        member = stranger.rooms[room_id].users.get(bot.user_id)
        if member is None and bot.user_id not in stranger.rooms[room_id].invited_users:
            break
    room = stranger.rooms[room_id]
    assert bot.user_id not in room.users and bot.user_id not in room.invited_users, "the invite was not declined"
    assert room_id not in bot.adapter.client.rooms


async def test_an_unreachable_homeserver_fails_start_with_one_line(app, tmp_path):
    from adapters.matrix_adapter import MatrixAdapter
    from config import MatrixConfig
    from engine.session_state import StoredSessionState
    from errors import ConfigError

    from .synapse import free_port

    config = MatrixConfig(
        enabled=True,
        homeserver=f"http://127.0.0.1:{free_port()}",
        user_id="@hearth:localhost",
        password="not-used",
        store_dir=str(tmp_path / "matrix"),
    )
    session = StoredSessionState(app.store, "matrix", config.user_id)
    adapter = MatrixAdapter(app.conversation, session, config, connect_timeout=3)
    with pytest.raises(ConfigError, match=r"matrix.homeserver: could not reach http://127\.0\.0\.1:\d+"):
        await adapter.start()


async def test_a_homeserver_that_stops_answering_after_the_login_fails_start_with_one_line(
    app, tmp_path, synapse, matrix_account
):
    """nio retries a request forever; start-up names the homeserver and gives up instead.

    The real Synapse is paused (SIGSTOP) right after the login: its socket still accepts
    connections, but nothing answers, as with a homeserver that hangs.
    """
    import os
    import signal

    from adapters.matrix_adapter import MatrixAdapter
    from config import MatrixConfig
    from engine.session_state import StoredSessionState
    from errors import InternalError

    account = matrix_account("hung")
    config = MatrixConfig(
        enabled=True,
        homeserver=synapse.url,
        user_id=account.user_id,
        password=account.password,
        store_dir=str(tmp_path / "matrix"),
    )
    session = StoredSessionState(app.store, "matrix", config.user_id)
    adapter = MatrixAdapter(app.conversation, session, config, first_sync_timeout=3)
    pid = synapse._process.pid
    ask_profile = adapter.client.get_displayname

    async def pause_the_server_then_ask(*args, **kwargs):
        os.kill(pid, signal.SIGSTOP)
        return await ask_profile(*args, **kwargs)

    adapter.client.get_displayname = pause_the_server_then_ask
    try:
        with pytest.raises(InternalError) as failed:
            await asyncio.wait_for(adapter.start(), 60)  # without its own timeout: a TimeoutError here
    finally:
        os.kill(pid, signal.SIGCONT)
    assert str(failed.value) == (f"{synapse.url} stopped answering: the first Matrix sync did not finish within 3 s")
