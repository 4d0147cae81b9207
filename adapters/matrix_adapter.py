"""The Matrix adapter: matrix-nio events in, engine values through, streamed edits out.

It translates and renders; the engine decides. A room event becomes an ``IncomingMessage``
(``matrix_mapping``), the engine's ``Outcome`` becomes one event edited as the reply streams
(``matrix_reply``), and ``!hearth …`` lines go to the shared command core. Matrix-specific
work lives here: the sync loop and its durable token, auto-join, power levels, threads,
attachments and end-to-end encryption.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinResponse,
    MatrixRoom,
    MegolmEvent,
    ProfileGetDisplayNameResponse,
    RedactionEvent,
    RoomGetEventResponse,
    RoomGetStateResponse,
    RoomMessageMedia,
    RoomMessageNotice,
    RoomMessageText,
    SyncResponse,
)
from nio.events.room_events import RoomEncryptedMedia

from adapters.matrix_attachments import read_attachment, replied_file
from adapters.matrix_characters import CharacterAvatars, CharacterMessages, character_of
from adapters.matrix_mapping import (
    PLATFORM,
    answered_event,
    creators_of,
    creators_privileged,
    edit_target,
    effective_power,
    inviter_allowed,
    is_addressed,
    is_operator,
    is_room_manager,
    readable_text,
    replied_to,
    room_for,
    thread_root,
)
from adapters.matrix_render import preformatted_content, text_content, with_relation
from adapters.matrix_reply import deliver_reply, file_content, send_event
from adapters.matrix_session import keep_keys, log_in, make_client
from adapters.presenting import present
from adapters.recent_ids import RecentIds
from engine.commands.core import CommandContext, CommandResult
from engine.commands.lore_commands import MAX_IMPORT_BYTES
from engine.scheduler import Admission
from engine.types import Attachment, Author, IncomingMessage, RoomRef, SessionState
from errors import ConfigError, HearthError, InternalError

if TYPE_CHECKING:
    from config import MatrixConfig
    from engine.conversation import Conversation, Outcome

log = logging.getLogger(__name__)

SYNC_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 60.0  # a wrong homeserver URL fails start-up with one line instead of hanging
# A homeserver that stops answering after the login fails start-up too (nio would retry forever);
# generous, as a big account's first full-state sync can take minutes.
FIRST_SYNC_TIMEOUT_S = 600.0
OWN_EVENTS_KEPT = 2000
LATE_JOIN_GRACE_MS = 60_000  # history older than this before our join is context, not a question
CANT_READ = "I can only read text and text files, so I can't read that, sorry."
Callback = Callable[..., Coroutine[Any, Any, None]]


def command_line(text: str, prefix: str) -> str | None:
    """The command after ``prefix`` (``!hearth model list`` → ``model list``; bare: help), else None.

    Case-insensitive; a prefix ending in a letter must be followed by a space, so ``!hearthy`` is chat.
    """
    text = text.strip()
    if not prefix or not text.lower().startswith(prefix.lower()):
        return None
    rest = text[len(prefix) :]
    if rest and not rest[0].isspace() and prefix[-1].isalnum():
        return None
    return rest.strip() or "help"


class MatrixOutput:
    """The presenter's ``Output`` in a Matrix room: notices, files and replies answer ``event``.

    Matrix has no ephemeral messages, so private output is shown to the room like the rest.
    """

    def __init__(self, adapter: MatrixAdapter, room: MatrixRoom, event: Any, ref: RoomRef) -> None:
        self.adapter = adapter
        self.room = room
        self.event = event
        self.ref = ref

    async def send_text(self, text: str, *, ephemeral: bool) -> None:
        await self.adapter._notice(self.room, self.event, text)

    async def send_table(self, text: str, *, ephemeral: bool) -> None:
        await self.adapter._notice(self.room, self.event, text, preformatted=True)

    async def send_notice(self, text: str) -> None:
        await self.adapter._notice(self.room, self.event, text)

    async def attach_files(self, files: tuple[Attachment, ...], *, ephemeral: bool) -> None:
        for file in files:
            content = await file_content(self.adapter.client, self.room.room_id, file)
            await self.adapter._send_answer(self.room, self.event, content)

    async def deliver_reply(self, admission: Admission) -> None:
        await self.adapter.deliver(self.room.room_id, admission, self.ref, reply_to=self.event.event_id)


class MatrixAdapter:
    """Connects one Matrix account to the engine. ``start()`` returns after the first sync."""

    def __init__(
        self,
        conversation: Conversation,
        session: SessionState,
        config: MatrixConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        first_sync_timeout: float = FIRST_SYNC_TIMEOUT_S,
    ) -> None:
        self.conversation = conversation
        self.connect_timeout = connect_timeout
        self.first_sync_timeout = first_sync_timeout
        self.config = config
        self.clock = clock
        self.state = session  # device, access token and sync token; kept by bot.py, not here
        self.client: AsyncClient = make_client(
            config.homeserver, config.user_id, Path(config.store_dir), config.encryption
        )
        self.display_name: str | None = None
        self._own: RecentIds[str] = RecentIds(OWN_EVENTS_KEPT)
        self.avatars = CharacterAvatars(self.client, session)  # a cast's card images, uploaded once
        self.characters = CharacterMessages(OWN_EVENTS_KEPT)  # our recent event id → its character
        self._joined_at_ms: dict[str, int] = {}
        self._room_creators: dict[str, frozenset[str]] = {}
        self._catching_up = False
        self._sync_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def user_id(self) -> str:
        return self.client.user_id

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in, catch up from the stored sync token, then keep syncing in a task."""
        config = self.config
        log.info("matrix: connecting to %s as %s", config.homeserver, config.user_id)
        try:
            async with asyncio.timeout(self.connect_timeout):  # nio itself would retry forever
                await log_in(
                    self.client,
                    self.state,
                    password=config.password.get_secret_value() if config.password else None,
                    access_token=config.access_token.get_secret_value() if config.access_token else None,
                    device_name=config.device_name,
                )
        except TimeoutError:
            await self.client.close()
            raise ConfigError("matrix.homeserver", f"could not reach {config.homeserver}") from None
        except HearthError:
            await self.client.close()
            raise
        try:
            async with asyncio.timeout(self.first_sync_timeout):
                response = await self._first_sync()
        except TimeoutError:
            await self.client.close()
            raise InternalError(
                f"{config.homeserver} stopped answering: the first Matrix sync did not finish "
                f"within {self.first_sync_timeout:.0f} s"
            ) from None
        if not isinstance(response, SyncResponse):
            await self.client.close()
            raise InternalError(f"the first Matrix sync failed: {getattr(response, 'message', response)}")
        self._catching_up = False
        await self._after_sync(response)
        if self.client.olm is not None:
            log.info(
                "matrix: E2EE on; device %s, fingerprint %s",
                self.client.device_id,
                self.client.olm.account.identity_keys["ed25519"],
            )
        log.info("matrix: connected as %s (%d room(s))", self.user_id, len(self.client.rooms))
        self._sync_task = asyncio.create_task(self._sync_forever(), name="hearth-matrix-sync")

    async def _first_sync(self) -> Any:
        """The profile, then a full-state catch-up from the stored sync token."""
        profile = await self.client.get_displayname()
        if isinstance(profile, ProfileGetDisplayNameResponse):
            self.display_name = profile.displayname
        self._register_callbacks()
        token = await self.state.get("next_batch")
        # A first start has no token: the history it syncs is old, so it is not answered.
        self._catching_up = token is None
        return await self.client.sync(timeout=0, since=token, full_state=True)

    async def close(self) -> None:
        """Stop syncing; replies still being written are cancelled (their turns are stored)."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()

    def _register_callbacks(self) -> None:
        self.client.add_event_callback(self._guarded(self._on_invite), InviteMemberEvent)
        self.client.add_event_callback(self._guarded(self._on_message), (RoomMessageText, RoomMessageNotice))
        self.client.add_event_callback(self._guarded(self._on_media), (RoomMessageMedia, RoomEncryptedMedia))
        self.client.add_event_callback(self._guarded(self._on_redaction), RedactionEvent)
        self.client.add_event_callback(self._guarded(self._on_undecryptable), MegolmEvent)

    def _guarded(self, handler: Callback) -> Callback:
        """An exception in one event must not stop the sync that delivered it."""

        async def run(room: MatrixRoom, event: Any) -> None:
            try:
                await handler(room, event)
            except HearthError as exc:
                log.warning("matrix: could not handle an event in %s: %s", room.room_id, exc)
            except Exception:
                log.exception("matrix: handling an event in %s crashed", room.room_id)

        return run

    async def _sync_forever(self) -> None:
        """Long-poll forever; nio retries lost connections itself, and errors back off here."""
        backoff = 1.0
        while True:
            try:
                response = await self.client.sync(timeout=SYNC_TIMEOUT_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                response = exc
            if isinstance(response, SyncResponse):
                backoff = 1.0
                try:
                    await self._after_sync(response)
                except HearthError as exc:
                    log.warning("matrix: after-sync work failed: %s", exc)
                continue
            reason = getattr(response, "message", None) or type(response).__name__
            log.warning("matrix: sync failed (%s); retrying in %.0f s", reason, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _after_sync(self, response: SyncResponse) -> None:
        """Persist the token (the events it covers were handled) and do the E2EE key chores."""
        await self.state.set("next_batch", response.next_batch)
        try:
            await keep_keys(self.client)
        except Exception as exc:
            log.warning("matrix: encryption key upkeep failed: %s", exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _own_name(self, room: MatrixRoom) -> str | None:
        """The bot's name in ``room`` (a per-room display name wins over the profile's)."""
        return room.user_name(self.user_id) or self.display_name

    # -- invites ----------------------------------------------------------------------------

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key != self.user_id or event.membership != "invite":
            return
        if not inviter_allowed(event.sender, self.config.allowed_inviters, self.user_id):
            log.info("matrix: declining an invite to %s from %s (not in allowed_inviters)", room.room_id, event.sender)
            await self.client.room_leave(room.room_id)
            return
        response = await self.client.join(room.room_id)
        if isinstance(response, JoinResponse):
            self._joined_at_ms[room.room_id] = int(time.time() * 1000)
            log.info("matrix: joined %s on %s's invite", room.room_id, event.sender)
        else:
            log.warning("matrix: could not join %s: %s", room.room_id, getattr(response, "message", response))

    # -- messages ---------------------------------------------------------------------------

    async def author_for(self, room: MatrixRoom, user_id: str) -> Author:
        """Operators by ``matrix.admins`` globs; room managers by their power level in this room."""
        level = room.power_levels.get_user_level(user_id) if room.power_levels else 0
        if creators_privileged(room.room_version):
            level = effective_power(user_id, level, await self._creators(room.room_id), room.room_version)
        return Author(
            id=user_id,
            display_name=room.user_name(user_id) or user_id,
            is_operator=is_operator(user_id, self.config.admins),
            is_room_manager=is_room_manager(level, self.config.admin_power_level),
        )

    async def _creators(self, room_id: str) -> frozenset[str]:
        """Who created the room (cached; fetched once, since nio keeps no create-event sender)."""
        cached = self._room_creators.get(room_id)
        if cached is None:
            response = await self.client.room_get_state(room_id)
            if not isinstance(response, RoomGetStateResponse):
                return frozenset()
            create: dict[str, Any] = next((e for e in response.events if e.get("type") == "m.room.create"), {})
            cached = self._room_creators[room_id] = creators_of(create)
        return cached

    def _should_answer(self, room: MatrixRoom, event: Any) -> bool:
        """Not history from long before we joined the room (a late joiner sees the backlog)."""
        stamp = int(getattr(event, "server_timestamp", 0) or 0)
        joined = self._joined_at_ms.get(room.room_id)
        return not (joined and stamp and stamp < joined - LATE_JOIN_GRACE_MS)

    async def _addressed(self, room: MatrixRoom, content: dict[str, Any], body: str) -> tuple[bool, str | None]:
        """Whether the platform trigger fired, and the character a reply answers (if it answers one)."""
        addressed = is_addressed(
            content,
            body,
            user_id=self.user_id,
            display_name=self._own_name(room),
            member_count=room.member_count,
            own_event_ids=self._own,
        )
        target = replied_to(content)
        if target is None:
            return addressed, None
        chosen = answered_event(content) is not None  # not a thread's automatic fallback reply
        character = self.characters.name_of(target) if chosen else None
        if character is not None or target in self._own:
            return addressed or character is not None, character
        # A reply to a message we sent before a restart: ask the server who (and which character) wrote it.
        response = await self.client.room_get_event(room.room_id, target)
        if not isinstance(response, RoomGetEventResponse) or response.event.sender != self.user_id:
            return addressed, None
        character = character_of(await self._decrypted_content(response.event))
        if character is not None:
            self.characters.remember(target, character)
        return True, character if chosen else None

    async def _decrypted_content(self, event: Any) -> dict[str, Any]:
        """The content of a fetched event, decrypted when it is encrypted (empty if we can't)."""
        if isinstance(event, MegolmEvent):
            try:
                event = self.client.decrypt_event(event)
            except Exception as exc:  # no key for it: the reply still addresses the bot
                log.debug("matrix: could not decrypt %s: %s", event.event_id, exc)
                return {}
        content = event.source.get("content", {})
        return content if isinstance(content, dict) else {}

    async def _incoming(
        self, room: MatrixRoom, event: Any, text: str, attachments: tuple[Attachment, ...] = ()
    ) -> IncomingMessage:
        content = event.source.get("content", {})
        addressed, character = await self._addressed(room, content, text)
        return IncomingMessage(
            room=room_for(room.room_id, content),
            author=await self.author_for(room, event.sender),
            text=readable_text(text, content, self.user_id, self._own_name(room)),
            message_id=event.event_id,
            addressed=addressed,
            attachments=attachments,
            created_at=datetime.fromtimestamp((event.server_timestamp or 0) / 1000, UTC),
            replied_to=character,
        )

    async def _on_message(self, room: MatrixRoom, event: RoomMessageText | RoomMessageNotice) -> None:
        if event.sender == self.user_id or self._catching_up:
            return
        content = event.source.get("content", {})
        target = edit_target(content)
        if target is not None:
            new = content.get("m.new_content")
            new_body = new.get("body") if isinstance(new, dict) else None
            if isinstance(new_body, str):  # an edit does not say which thread its message is in
                ref = await self.conversation.locate(RoomRef(PLATFORM, room.room_id), target)
                text = readable_text(new_body, {}, self.user_id, self._own_name(room))
                await self.conversation.message_edited(ref, target, text)
            return
        await self._dispatch(room, event, event.body or "")

    async def _on_media(self, room: MatrixRoom, event: Any) -> None:
        if event.sender == self.user_id or self._catching_up:
            return
        attachment = await read_attachment(self.client, event, self.config.max_attachment_kb * 1024)
        if attachment.text is None:
            incoming = await self._incoming(room, event, "")
            if incoming.addressed and self._should_answer(room, event):
                await self._notice(room, event, CANT_READ)
            return
        await self._dispatch(room, event, "", (attachment,))

    async def _dispatch(
        self, room: MatrixRoom, event: Any, text: str, attachments: tuple[Attachment, ...] = ()
    ) -> None:
        ref = room_for(room.room_id, event.source.get("content", {}))
        if await self.conversation.already_stored(ref, event.event_id):
            return  # a replayed event: answered before the restart
        incoming = await self._incoming(room, event, text, attachments)
        command = command_line(incoming.text, self.config.command_prefix)
        if not self._should_answer(room, event):
            if command is None:
                await self.conversation.remember(replace(incoming, addressed=False))
            return
        if command is not None:
            self._spawn(self._run_command(room, event, incoming, command))  # a model load must not stall the sync
            return
        outcome = await self.conversation.handle(incoming)
        self._spawn(self._present(MatrixOutput(self, room, event, incoming.room), outcome))

    async def _present(self, output: MatrixOutput, answer: CommandResult | Outcome) -> None:
        try:
            await present(answer, output)
        except HearthError as exc:
            log.warning("matrix: could not answer in %s: %s", output.ref.label, exc)

    async def deliver(self, room_id: str, admission: Admission, ref: RoomRef, *, reply_to: str | None) -> None:
        """Stream an admitted turn into the room, as a reply (in its thread, if any)."""
        await deliver_reply(
            self.client,
            room_id,
            admission.ticket.reply,
            reply_to=reply_to,
            thread=ref.thread_id,
            position=admission.position,
            msgtype=self.config.msgtype,
            edit_interval=self.config.edit_interval,
            max_edits=self.config.max_edits,
            clock=self.clock,
            on_sent=self._own.add,
            avatars=self.avatars,
            on_character=self.characters.remember,
        )

    async def _notice(self, room: MatrixRoom, event: Any, text: str, *, preformatted: bool = False) -> None:
        content = preformatted_content(text) if preformatted else text_content(text, "m.notice")
        await self._send_answer(room, event, content)

    async def _send_answer(self, room: MatrixRoom, event: Any, content: dict[str, Any]) -> None:
        """Send ``content`` as an answer to ``event``, in its thread if it has one."""
        with_relation(content, reply_to=event.event_id, thread=thread_root(event.source.get("content", {})))
        self._own.add(await send_event(self.client, room.room_id, content))

    async def _run_command(self, room: MatrixRoom, event: Any, incoming: IncomingMessage, line: str) -> None:
        """``!hearth …`` through the command core; progress lines ("loading…") are notices too."""

        async def progress(text: str) -> None:
            await self._notice(room, event, text)

        async def replied_file() -> tuple[Attachment, ...]:
            return await self._replied_file(room, event)

        ctx = CommandContext(
            incoming.room, incoming.author, incoming.attachments, progress=progress, fetch_files=replied_file
        )
        result = await self.conversation.run_command(line, ctx)
        await self._present(MatrixOutput(self, room, event, incoming.room), result)

    async def _replied_file(self, room: MatrixRoom, event: Any) -> tuple[Attachment, ...]:
        """A command can't carry a file, so a command replying to a file event takes that file."""
        target = replied_to(event.source.get("content", {}))
        if target is None:
            return ()
        try:
            attachment = await replied_file(self.client, room.room_id, target, MAX_IMPORT_BYTES)
        except Exception as exc:  # the command still runs, and says there is nothing attached
            log.warning("matrix: could not fetch the file %s replied to: %s", target, exc)
            return ()
        return (attachment,) if attachment is not None else ()

    # -- edits, deletions, undecryptable events ---------------------------------------------

    async def _on_redaction(self, room: MatrixRoom, event: RedactionEvent) -> None:
        if event.sender == self.user_id or self._catching_up:
            return
        ref = await self.conversation.locate(RoomRef(PLATFORM, room.room_id), event.redacts)
        await self.conversation.message_deleted(ref, event.redacts)

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        log.warning("matrix: could not decrypt an event from %s in %s; asking for its key", event.sender, room.room_id)
        with contextlib.suppress(Exception):
            await self.client.request_room_key(event)


__all__ = ["MatrixAdapter"]
