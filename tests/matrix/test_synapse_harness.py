"""The harness itself: a real Synapse, two nio users, plain and encrypted round trips, a restart."""

from __future__ import annotations

import json
import urllib.request

import pytest
from nio import InviteMemberEvent, MegolmEvent, RoomMessageText

from .harness import (
    collect_events,
    create_room,
    invite,
    invite_state,
    is_edit,
    is_message,
    join,
    send_text,
    wait_for_event,
    wait_for_invite,
    wait_for_member,
)
from .synapse import SynapseError


def test_homeserver_answers(synapse):
    with urllib.request.urlopen(f"{synapse.url}/_matrix/client/versions", timeout=5) as response:
        versions = json.loads(response.read())["versions"]
    assert "v1.1" in versions or "r0.6.1" in versions
    assert synapse.url.startswith("http://127.0.0.1:")


def test_register_gives_a_working_token(synapse):
    account = synapse.register_account("probe")
    assert account.user_id == f"@{account.localpart}:{synapse.server_name}"
    whoami = synapse.request("GET", "/_matrix/client/v3/account/whoami", token=account.access_token)
    assert whoami["user_id"] == account.user_id
    assert whoami["device_id"] == account.device_id
    with pytest.raises(SynapseError, match="401"):
        synapse.request("GET", "/_matrix/client/v3/account/whoami", token="not-a-token")


async def test_message_round_trip(matrix_user):
    alice = await matrix_user("alice")
    bob = await matrix_user("bob")
    room_id = await create_room(alice, name="plain")
    await invite(alice, room_id, bob.user_id)
    assert await wait_for_invite(bob, room_id) == room_id
    with pytest.raises(AssertionError, match="did not join"):  # invited is not joined
        await wait_for_member(alice, room_id, bob.user_id, timeout=1)
    await join(bob, room_id)
    await wait_for_member(alice, room_id, bob.user_id)

    event_id = await send_text(alice, room_id, "hello bob")
    got = await wait_for_event(bob, room_id, is_message(alice.user_id, "hello bob"), timeout=15)
    assert isinstance(got, RoomMessageText)
    assert got.event_id == event_id
    assert got.body == "hello bob"

    # An edit arrives as its own m.replace event, after the original.
    await send_text(
        alice,
        room_id,
        "* hello bob!",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "hello bob!"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
        },
    )
    await send_text(alice, room_id, "done")
    sources = await collect_events(bob, room_id, is_message(alice.user_id, "done"), timeout=15)
    edits = [source for source in sources if source["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"]
    assert len(edits) == 1
    assert edits[0]["content"]["m.relates_to"]["event_id"] == event_id
    assert edits[0]["content"]["m.new_content"]["body"] == "hello bob!"
    assert sources[-1]["content"]["body"] == "done"


async def test_direct_room_is_marked_direct(matrix_user):
    alice = await matrix_user("alice")
    bob = await matrix_user("bob")
    room_id = await create_room(alice, invite=[bob.user_id], is_direct=True)
    await wait_for_invite(bob, room_id)
    assert bob.invited_rooms[room_id].inviter == alice.user_id
    member = next(
        event
        for event in invite_state(bob, room_id)
        if isinstance(event, InviteMemberEvent) and event.state_key == bob.user_id
    )
    assert member.membership == "invite"
    assert member.content.get("is_direct") is True


async def test_encrypted_round_trip(matrix_user):
    alice = await matrix_user("alice")
    bob = await matrix_user("bob")
    room_id = await create_room(alice, name="secret", invite=[bob.user_id], encrypted=True)
    await wait_for_invite(bob, room_id)
    await join(bob, room_id)
    await wait_for_member(alice, room_id, bob.user_id)
    assert alice.rooms[room_id].encrypted
    assert bob.rooms[room_id].encrypted

    await send_text(alice, room_id, "a secret for bob")
    got = await wait_for_event(bob, room_id, lambda e: isinstance(e, (RoomMessageText, MegolmEvent)), timeout=15)
    assert isinstance(got, RoomMessageText), f"bob could not decrypt: {got}"
    assert got.decrypted
    assert got.body == "a secret for bob"

    # And back: bob's reply, plus an edit of it, are readable by alice.
    reply_id = await send_text(bob, room_id, "thanks alice")
    await send_text(
        bob,
        room_id,
        "* thanks, alice",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "thanks, alice"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": reply_id},
        },
    )
    edit = await wait_for_event(alice, room_id, is_edit, timeout=15)
    assert isinstance(edit, RoomMessageText)
    assert edit.decrypted
    assert edit.source["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": reply_id}
    assert edit.source["content"]["m.new_content"]["body"] == "thanks, alice"


async def test_restart_keeps_port_and_data(synapse, matrix_user):
    alice = await matrix_user("alice")
    room_id = await create_room(alice, name="survives")
    url = synapse.url
    synapse.stop()
    assert not synapse.running
    synapse.start()
    assert synapse.url == url
    await send_text(alice, room_id, "still here")
    await wait_for_event(alice, room_id, is_message(alice.user_id, "still here"), timeout=15)
