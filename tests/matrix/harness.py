"""matrix-nio helpers for tests that talk to the real homeserver: rooms, sending, waiting for events.

Every `sync_once` appends the timeline events of each joined room to a per-client log. `wait_for_event`
and `collect_events` read that log from a per-room cursor and move the cursor past what they return, so
events are never lost between two waits: "wait for the next matching event" is always well defined.
Encrypted events arrive already decrypted (nio swaps them in during sync); ones nio could not decrypt
stay `MegolmEvent`s, so a predicate can notice them. Predicates receive the nio event; `.source` is the
raw dict (for decrypted events: the decrypted payload, with `m.relates_to` kept).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nio import AsyncClient, Event, JoinError, RoomCreateError, RoomInviteError, RoomSendError, SyncError

from adapters.matrix_session import keep_keys

Predicate = Callable[[Event], bool]
MEGOLM = "m.megolm.v1.aes-sha2"
ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
# A large timeline limit, so a burst of edits between two syncs is not cut into a "limited" gap.
SYNC_FILTER = {"room": {"timeline": {"limit": 200}, "state": {"lazy_load_members": False}}}


@dataclass
class _Log:
    events: dict[str, list[Event]] = field(default_factory=dict)
    cursor: dict[str, int] = field(default_factory=dict)
    invites: dict[str, list[Event]] = field(default_factory=dict)


_LOGS: weakref.WeakKeyDictionary[AsyncClient, _Log] = weakref.WeakKeyDictionary()


def _log(client: AsyncClient) -> _Log:
    log = _LOGS.get(client)
    if log is None:
        log = _LOGS[client] = _Log()
    return log


async def sync_once(client: AsyncClient, timeout_ms: int = 0) -> None:
    """One /sync plus the key housekeeping `sync_forever` would do; records timeline events."""
    response = await client.sync(timeout=timeout_ms, sync_filter=SYNC_FILTER)
    if isinstance(response, SyncError):
        raise AssertionError(f"{client.user_id}: sync failed: {response.message} ({response.status_code})")
    log = _log(client)
    for room_id, info in response.rooms.join.items():
        log.events.setdefault(room_id, []).extend(info.timeline.events)
    for room_id, info in response.rooms.invite.items():
        log.invites.setdefault(room_id, []).extend(info.invite_state)
    await keep_keys(client)


def seen_events(client: AsyncClient, room_id: str) -> list[Event]:
    """Every timeline event recorded so far for the room, cursor ignored."""
    return list(_log(client).events.get(room_id, []))


def invite_state(client: AsyncClient, room_id: str) -> list[Event]:
    """The stripped state events of an invite (e.g. InviteMemberEvent with `content["is_direct"]`)."""
    return list(_log(client).invites.get(room_id, []))


def skip_seen(client: AsyncClient, room_id: str) -> None:
    """Move the room's cursor past everything recorded so far (ignore the backlog)."""
    log = _log(client)
    log.cursor[room_id] = len(log.events.get(room_id, []))


def _describe(event: Event) -> str:
    source = event.source if isinstance(event.source, dict) else {}
    content = source.get("content", {})
    relates = content.get("m.relates_to", {}) if isinstance(content, dict) else {}
    body = content.get("body") if isinstance(content, dict) else None
    extra = f" rel={relates.get('rel_type')}" if relates else ""
    return f"{type(event).__name__} {source.get('type')} from {source.get('sender')}{extra} body={body!r}"


async def _scan(client: AsyncClient, room_id: str, predicate: Predicate, timeout: float) -> tuple[list[Event], Event]:
    """Events from the cursor up to and including the first match, syncing until one arrives."""
    log = _log(client)
    deadline = time.monotonic() + timeout
    while True:
        events = log.events.get(room_id, [])
        start = log.cursor.get(room_id, 0)
        for index in range(start, len(events)):
            if predicate(events[index]):
                log.cursor[room_id] = index + 1
                return events[start : index + 1], events[index]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            seen = "\n  ".join(_describe(event) for event in events[start:][-20:]) or "(nothing)"
            raise AssertionError(
                f"{client.user_id}: no matching event in {room_id} within {timeout:.1f} s; unmatched:\n  {seen}"
            )
        poll_ms = int(min(remaining, 1.0) * 1000)
        try:
            await asyncio.wait_for(sync_once(client, timeout_ms=poll_ms), timeout=remaining + 5)
        except TimeoutError:
            continue


async def wait_for_event(client: AsyncClient, room_id: str, predicate: Predicate, timeout: float = 30.0) -> Event:
    """The next event in the room's timeline (after earlier waits) that matches; AssertionError on timeout."""
    _, event = await _scan(client, room_id, predicate, timeout)
    return event


async def collect_events(
    client: AsyncClient, room_id: str, until_predicate: Predicate, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The raw `source` dicts of every event from the cursor up to and including the first match."""
    events, _ = await _scan(client, room_id, until_predicate, timeout)
    return [event.source for event in events]


# -- predicates ------------------------------------------------------------------------------------


def relation(event: Event) -> dict[str, Any]:
    content = event.source.get("content", {}) if isinstance(event.source, dict) else {}
    relates = content.get("m.relates_to") if isinstance(content, dict) else None
    return relates if isinstance(relates, dict) else {}


def is_edit(event: Event) -> bool:
    """An `m.replace` edit (nio parses these as RoomMessageText too)."""
    return relation(event).get("rel_type") == "m.replace"


def is_message(sender: str | None = None, body: str | None = None, *, edits: bool = False) -> Predicate:
    """An `m.room.message` (decrypted or plain), optionally from `sender`, with `body` in its text."""

    def check(event: Event) -> bool:
        source = event.source if isinstance(event.source, dict) else {}
        if source.get("type") != "m.room.message" or (sender and source.get("sender") != sender):
            return False
        if is_edit(event) and not edits:
            return False
        content = source.get("content", {})
        text = content.get("m.new_content", content).get("body", "") if is_edit(event) else content.get("body", "")
        return body is None or body in text

    return check


# -- rooms -----------------------------------------------------------------------------------------


async def create_room(
    client: AsyncClient,
    *,
    name: str | None = None,
    invite: list[str] | tuple[str, ...] = (),
    is_direct: bool = False,
    encrypted: bool = False,
    initial_state: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> str:
    """Create a private room (DM with `is_direct`, Megolm with `encrypted`); syncs so nio knows it."""
    state = list(initial_state or [])
    if encrypted:
        state.append(ENCRYPTION_STATE)
    response = await client.room_create(
        name=name, invite=list(invite), is_direct=is_direct, initial_state=state, **kwargs
    )
    if isinstance(response, RoomCreateError):
        raise AssertionError(f"{client.user_id}: room_create failed: {response.message}")
    await sync_once(client)
    return response.room_id


async def invite(client: AsyncClient, room_id: str, user_id: str) -> None:
    response = await client.room_invite(room_id, user_id)
    if isinstance(response, RoomInviteError):
        raise AssertionError(f"{client.user_id}: invite of {user_id} to {room_id} failed: {response.message}")


async def join(client: AsyncClient, room_id: str) -> None:
    """Join (after an invite) and sync, so the room and its encryption state are known to nio."""
    response = await client.join(room_id)
    if isinstance(response, JoinError):
        raise AssertionError(f"{client.user_id}: join {room_id} failed: {response.message}")
    await sync_once(client)


async def wait_for_invite(client: AsyncClient, room_id: str | None = None, timeout: float = 30.0) -> str:
    """Sync until an invite (to `room_id`, or any) shows up; returns the room id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if room_id is None and client.invited_rooms:
            return next(iter(client.invited_rooms))
        if room_id in client.invited_rooms or room_id in client.rooms:
            return room_id
        await sync_once(client, timeout_ms=500)
    raise AssertionError(f"{client.user_id}: no invite{f' to {room_id}' if room_id else ''} within {timeout} s")


async def wait_for_member(client: AsyncClient, room_id: str, user_id: str, timeout: float = 30.0) -> None:
    """Sync until `user_id` has joined `room_id` as far as this client knows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        room = client.rooms.get(room_id)
        # nio lists invited users in `users` too; only a join counts here.
        if room is not None and user_id in room.users and user_id not in room.invited_users:
            return
        await sync_once(client, timeout_ms=500)
    raise AssertionError(f"{client.user_id}: {user_id} did not join {room_id} within {timeout} s")


async def send_text(client: AsyncClient, room_id: str, body: str, **content: Any) -> str:
    """Send an `m.text` (encrypted if the room is); returns the event id."""
    message = {"msgtype": "m.text", "body": body, **content}
    response = await client.room_send(room_id, "m.room.message", message, ignore_unverified_devices=True)
    if isinstance(response, RoomSendError):
        raise AssertionError(f"{client.user_id}: send to {room_id} failed: {response.message}")
    return response.event_id
