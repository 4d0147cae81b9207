"""The Discord adapter: discord.py events in, engine values through, streamed replies out.

It translates and renders; it decides nothing the engine decides. A message becomes an
``IncomingMessage`` (``discord_mapping``), the engine's ``Outcome`` becomes a streamed reply
(``discord_reply``), and each ``/hearth`` slash command becomes command-core text
(``discord_commands``). Discord-specific limits live here: 2,000-character messages, the
3-second interaction deadline, ephemeral output, mention safety, command sync and sharding.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import app_commands

from adapters.discord_commands import build_hearth_group
from adapters.discord_mapping import (
    PLATFORM,
    author_for,
    is_addressed,
    read_attachments,
    readable_text,
    room_for,
    room_for_channel_id,
)
from adapters.discord_reply import DISCORD_LIMIT, SAFE_MENTIONS, deliver_reply
from adapters.discord_webhooks import CharacterWebhooks
from adapters.presenting import present_outcome, present_result
from adapters.recent_ids import RecentIds
from adapters.rendering import defuse_mentions, split_message
from engine.commands.core import CommandContext, CommandResult
from engine.scheduler import Admission
from engine.types import Attachment, IncomingMessage, RoomRef
from errors import CommandError, ConfigError, HearthError, InternalError

if TYPE_CHECKING:
    from config import DiscordConfig
    from engine.conversation import Conversation

log = logging.getLogger(__name__)

DEFER_AFTER_S = 2.0  # Discord drops an interaction not answered within 3 s; defer well before
FILE_OUTPUT_CHARS = 4000  # longer command output goes as a file instead of a wall of messages
OWN_MESSAGES_KEPT = 2000  # bot message ids remembered, to spot replies whose target is not resolved
FILES_PER_MESSAGE = 10  # Discord's cap on attachments per message
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def make_intents() -> discord.Intents:
    """Default intents plus message content (privileged: enable it in the developer portal)."""
    intents = discord.Intents.default()
    intents.message_content = True
    return intents


def make_client(config: DiscordConfig, intents: discord.Intents | None = None) -> discord.Client:
    """A plain client, or an auto-sharded one when ``shard_count`` is set (a number or ``auto``),
    connecting only ``shard_ids`` when those are given.

    The safe ``AllowedMentions`` is the client-wide default, so even a send that forgot to pass
    it cannot ping anyone; ``intents`` is for tests, which need the member cache.
    """
    options: dict[str, Any] = {"intents": intents or make_intents(), "allowed_mentions": SAFE_MENTIONS}
    if config.shard_count is None:
        return discord.Client(**options)
    shard_count = None if config.shard_count == "auto" else config.shard_count
    # shard_ids: this process serves only these shards; others serve the rest (bot.py leases each one)
    if config.shard_ids is not None:
        options["shard_ids"] = list(config.shard_ids)
    return discord.AutoShardedClient(shard_count=shard_count, **options)


def file_batches(files: Sequence[discord.File]) -> list[list[discord.File]]:
    """``files`` in groups Discord takes in one message."""
    return [list(files[start : start + FILES_PER_MESSAGE]) for start in range(0, len(files), FILES_PER_MESSAGE)]


class InteractionResponder:
    """Answers one interaction: the first output is the response, later ones are follow-ups.

    ``ephemeral_hint`` is used when the answer must be deferred before the result (and thus
    its real ``ephemeral`` flag) is known: Discord fixes a deferred answer's visibility up front.
    """

    def __init__(self, interaction: discord.Interaction, ephemeral_hint: bool) -> None:
        self.interaction = interaction
        self.ephemeral_hint = ephemeral_hint
        self._lock = asyncio.Lock()

    async def defer(self) -> None:
        async with self._lock:
            if not self.interaction.response.is_done():
                await self.interaction.response.defer(ephemeral=self.ephemeral_hint, thinking=True)

    async def progress(self, text: str) -> None:
        await self.send(text, ephemeral=self.ephemeral_hint)

    async def send(self, text: str, *, ephemeral: bool) -> None:
        text = defuse_mentions(text.strip()) or "(done)"
        async with self._lock:
            if len(text) > FILE_OUTPUT_CHARS:
                data = io.BytesIO(text.encode("utf-8"))
                await self._send_one(
                    "the output is long, so here it is as a file:",
                    ephemeral,
                    file=discord.File(data, filename="hearth-output.txt"),
                )
                return
            for piece in split_message(text, DISCORD_LIMIT):
                await self._send_one(piece, ephemeral)

    async def send_files(self, files: Sequence[discord.File], *, ephemeral: bool) -> None:
        async with self._lock:
            for batch in file_batches(files):
                await self._send_one("", ephemeral, files=batch)

    async def _send_one(self, text: str, ephemeral: bool, **extra: Any) -> None:
        response = self.interaction.response
        if not response.is_done():
            await response.send_message(text, ephemeral=ephemeral, allowed_mentions=SAFE_MENTIONS, **extra)
        else:
            await self.interaction.followup.send(text, ephemeral=ephemeral, allowed_mentions=SAFE_MENTIONS, **extra)


class DiscordOutput:
    """The presenter's ``Output`` on Discord: an interaction's answer, or the channel of a message.

    Command output goes through the interaction's ``responder`` when there is one (a slash
    command), else into ``channel``; notices answer ``reference``; replies stream into ``channel``.
    """

    def __init__(
        self,
        adapter: DiscordAdapter,
        channel: Any,
        room: RoomRef,
        *,
        reference: discord.Message | None = None,
        responder: InteractionResponder | None = None,
    ) -> None:
        self.adapter = adapter
        self.channel = channel
        self.room = room
        self.reference = reference
        self.responder = responder

    async def send_text(self, text: str, *, ephemeral: bool) -> None:
        if self.responder is not None:
            await self.responder.send(text, ephemeral=ephemeral)
            return
        for piece in split_message(defuse_mentions(text), DISCORD_LIMIT):
            await self.channel.send(piece, allowed_mentions=SAFE_MENTIONS)

    async def send_table(self, text: str, *, ephemeral: bool) -> None:
        await self.send_text(f"```\n{text}\n```", ephemeral=ephemeral)  # proportional fonts scramble columns

    async def send_notice(self, text: str) -> None:
        if self.reference is not None:
            await self.reference.reply(defuse_mentions(text), allowed_mentions=SAFE_MENTIONS)
        else:
            await self.send_text(text, ephemeral=True)

    async def attach_files(self, files: tuple[Attachment, ...], *, ephemeral: bool) -> None:
        uploads = [discord.File(io.BytesIO(f.data or b""), filename=f.filename) for f in files]
        if self.responder is not None:
            await self.responder.send_files(uploads, ephemeral=ephemeral)
            return
        for batch in file_batches(uploads):
            await self.channel.send(files=batch, allowed_mentions=SAFE_MENTIONS)

    async def deliver_reply(self, admission: Admission) -> None:
        if self.channel is not None:
            await self.adapter.deliver(self.channel, admission, self.room, reference=self.reference)


class DiscordAdapter:
    """Connects one Discord bot account to the engine. ``start()`` returns once logged in."""

    def __init__(
        self,
        conversation: Conversation,
        config: DiscordConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        client: discord.Client | None = None,
    ) -> None:
        self.conversation = conversation
        self.config = config
        self.clock = clock
        self.client = client or make_client(config)
        self.tree = app_commands.CommandTree(self.client)
        self.hearth = build_hearth_group(conversation, self.run_slash)
        self.tree.add_command(self.hearth)
        self.tree.error(self._on_tree_error)
        self._own: RecentIds[int] = RecentIds(OWN_MESSAGES_KEPT)
        self.webhooks = CharacterWebhooks(self.client, clock)  # a cast's characters speak through these
        self._task: asyncio.Task[None] | None = None
        self._replies: set[asyncio.Task[Any]] = set()
        for handler in (
            self.on_ready,
            self.on_message,
            self.on_raw_message_edit,
            self.on_raw_message_delete,
            self.on_raw_bulk_message_delete,
        ):
            self.client.event(handler)
        self._owners: frozenset[str] = frozenset()
        self.client.setup_hook = self._setup  # type: ignore[method-assign]

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in (a bad token fails here, as a config error), then run the gateway in a task."""
        token = self.config.token.get_secret_value() if self.config.token else ""
        if not token:
            raise ConfigError("discord.token", "is required to connect to Discord")
        try:
            await self.client.login(token)
        except discord.LoginFailure:
            raise ConfigError("discord.token", "Discord rejected the token") from None
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            raise InternalError(f"could not reach Discord: {type(exc).__name__}", original=exc) from None
        self._task = asyncio.create_task(self._connect(), name="hearth-discord")

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            log.error("discord: enable the Message Content intent for this bot in the developer portal")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the discord connection stopped")

    async def close(self) -> None:
        """Log out and wait for the gateway task; replies still being written are cancelled."""
        for task in list(self._replies):
            task.cancel()
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _setup(self) -> None:
        await self.load_owners()
        await self.sync_commands()

    async def load_owners(self) -> None:
        """The application's owner, or its team's members: operators by default, like discord.py's
        ``Bot.is_owner``. Failing to read them leaves ``discord.admin_users`` as the only operators."""
        try:
            info = await self.client.application_info()
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning("discord: could not read the application's owners (%s); operators: admin_users only", exc)
            return
        if info.team is not None:
            self._owners = frozenset(str(member.id) for member in info.team.members)
        elif info.owner is not None:
            self._owners = frozenset({str(info.owner.id)})
        log.info("discord: %d application owner(s) are operators", len(self._owners))

    @property
    def operators(self) -> frozenset[str]:
        """User ids with bot-wide rights: ``discord.admin_users`` plus the application's owners."""
        return frozenset(self.config.admin_users) | self._owners

    async def sync_commands(self) -> None:
        """Sync ``/hearth`` to the dev guild (instant) or globally (may take an hour to show)."""
        try:
            if self.config.dev_guild:
                guild = discord.Object(id=int(self.config.dev_guild))
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d slash command(s) to guild %s", len(synced), self.config.dev_guild)
            else:
                synced = await self.tree.sync()
                log.info("synced %d slash command(s) globally", len(synced))
        except ValueError:
            log.error("discord.dev_guild must be a server id (a number), not %r", self.config.dev_guild)
        except discord.HTTPException as exc:
            log.error("could not sync slash commands (is the applications.commands scope granted?): %s", exc)

    async def on_ready(self) -> None:
        user = self.client.user
        log.info("discord: connected as %s to %d server(s)", user, len(self.client.guilds))

    # -- messages ---------------------------------------------------------------------------

    def _remember(self, message: discord.Message) -> None:
        self._own.add(message.id)

    async def incoming(self, message: discord.Message) -> IncomingMessage | None:
        """Translate a message, or None when the engine should never see it.

        Dropped: our own messages (a character's webhook messages too), system messages, other
        bots (unless ``ignore_bots`` is off) and DMs when they are not allowed. Everything else
        reaches the engine, which stores it as context even when it does not answer. A reply to
        a character's message names that character (``replied_to``) and addresses the bot.
        """
        me = self.client.user
        if me is None or message.author.id == me.id or message.type not in ANSWERED_TYPES:
            return None
        if self.webhooks.owns(message.webhook_id):
            return None
        if message.author.bot and self.config.ignore_bots:
            return None
        if message.guild is None and not self.config.allow_dms:
            return None
        text = readable_text(message, me.id)
        attachments = await read_attachments(message.attachments)
        if not text and not any(a.text for a in attachments):
            return None
        author = author_for(message.author, message.channel, self.operators, self.config.admin_roles)
        if not self.config.ignore_bots:
            author = replace(author, is_bot=False)  # the config says bots are answered like people
        replied_to = await self.webhooks.replied_character(message)
        addressed = replied_to is not None or is_addressed(
            message,
            me.id,
            allow_dms=self.config.allow_dms,
            answer_channels=self.config.answer_channels,
            own_message_ids=self._own,
        )
        return IncomingMessage(
            room=room_for(message.channel),
            author=author,
            text=text,
            message_id=str(message.id),
            addressed=addressed,
            attachments=attachments,
            created_at=message.created_at,
            replied_to=replied_to,
        )

    async def on_message(self, message: discord.Message) -> None:
        try:
            incoming = await self.incoming(message)
            if incoming is None:
                return
            outcome = await self.conversation.handle(incoming)
        except HearthError as exc:
            log.warning(
                "could not handle a message in %s: %s", message.channel.id, exc, exc_info=getattr(exc, "original", None)
            )
            return
        try:
            await present_outcome(outcome, DiscordOutput(self, message.channel, incoming.room, reference=message))
        except discord.HTTPException as exc:
            log.warning("could not answer in %s: %s", incoming.room.label, exc)

    async def deliver(
        self,
        channel: Any,
        admission: Admission,
        room: RoomRef,
        *,
        reference: discord.Message | None = None,
    ) -> None:
        """Stream an admitted turn into ``channel`` (the current task is tracked so close() can stop it)."""
        task = asyncio.current_task()
        if task is not None:
            self._replies.add(task)
        try:
            await deliver_reply(
                channel,
                admission.ticket.reply,
                reference=reference,
                position=admission.position,
                edit_interval=self.config.edit_interval,
                max_edits=self.config.max_edits,
                clock=self.clock,
                on_sent=self._remember,
                room_label=room.label,
                webhooks=self.webhooks,
            )
        finally:
            if task is not None:
                self._replies.discard(task)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """A user edited a message: memory follows. Updates that leave the text alone (embeds) are skipped."""
        message = payload.message
        before = payload.cached_message
        if "content" not in payload.data or (before is not None and before.content == message.content):
            return
        me = self.client.user
        if me is None or message.author.id == me.id or (message.author.bot and self.config.ignore_bots):
            return
        if self.webhooks.owns(message.webhook_id):
            return  # a character's reply being streamed: the engine stored it itself
        room = room_for(message.channel) if message.channel is not None else RoomRef(PLATFORM, str(payload.channel_id))
        try:
            await self.conversation.message_edited(room, str(payload.message_id), readable_text(message, me.id))
        except HearthError as exc:
            log.warning("could not apply an edit in %s: %s", room.label, exc)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._deleted(payload.channel_id, [payload.message_id])

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._deleted(payload.channel_id, sorted(payload.message_ids))

    async def _deleted(self, channel_id: int, message_ids: Sequence[int]) -> None:
        room = room_for_channel_id(self.client, channel_id)
        for message_id in message_ids:
            try:
                await self.conversation.message_deleted(room, str(message_id))
            except HearthError as exc:
                log.warning("could not apply a delete in %s: %s", room.label, exc)

    # -- slash commands ---------------------------------------------------------------------

    def _is_privileged_command(self, words: Sequence[str]) -> bool:
        try:
            command, _ = self.conversation.commands.find(list(words))
        except CommandError:
            return False
        return command.privileged

    async def run_slash(
        self,
        interaction: discord.Interaction,
        words: Sequence[str],
        attachments: Sequence[discord.Attachment] = (),
    ) -> None:
        """Run one slash command through the command core and show its result.

        A result arriving within ``DEFER_AFTER_S`` is the response itself (so its ``ephemeral``
        flag is honoured exactly); a slower one (a model load) is deferred first.
        """
        channel = interaction.channel
        if isinstance(channel, discord.Thread | discord.abc.GuildChannel | discord.DMChannel):
            room = room_for(channel)
        else:  # a partial channel: look it up, so a thread still maps to (parent, thread)
            room = room_for_channel_id(self.client, interaction.channel_id or 0)
        author = author_for(interaction.user, channel, self.operators, self.config.admin_roles)
        responder = InteractionResponder(interaction, ephemeral_hint=self._is_privileged_command(words))

        async def execute() -> CommandResult:
            files = await read_attachments(attachments, cards=True)  # a card download counts toward the deadline
            ctx = CommandContext(room, author, files, progress=responder.progress)
            return await self.conversation.run_command(shlex.join(words), ctx)

        task = asyncio.create_task(execute())
        done, _ = await asyncio.wait({task}, timeout=DEFER_AFTER_S)
        if not done:
            await responder.defer()
        await present_result(await task, DiscordOutput(self, channel, room, responder=responder))

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.error("slash command failed: %s", error, exc_info=error)
        with contextlib.suppress(discord.HTTPException):
            responder = InteractionResponder(interaction, ephemeral_hint=True)
            await responder.send("error: the command failed (details are in the log)", ephemeral=True)


__all__ = ["DiscordAdapter", "InteractionResponder", "make_client", "make_intents"]
