"""The engine's two entry points: ``handle`` for chat, ``run_command`` for commands.

Each adapter recognises its own command syntax (``/`` on the console, ``!hearth`` on
Matrix, slash commands on Discord) and sends command lines to ``run_command``; every
other message goes to ``handle``, where handlers run in a fixed order: the trigger
policy, then the rate limits, then the chat reply. Every chat message that reaches the
engine is stored, even when it gets no reply, is rate limited, or the queue is full.

This module routes only: prompts are built in ``engine.prompting`` and summaries written
in ``engine.summaries``. A room's settings are read once when a message arrives (the
trigger policy) and once per reply turn, as a ``RoomTurn`` snapshot passed down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from engine.backend import GenerationRequest
from engine.commands.core import CommandContext, CommandCore, CommandResult
from engine.context import AssembledPrompt, fits_uncounted, message_token_limit
from engine.limits import Limited, RateLimiter
from engine.model_host import ModelHost
from engine.persona_models import PersonaModels
from engine.prompting import (
    LONG_INPUT_NOTICE,
    PromptBuilder,
    RoomTurn,
    clean_reply,
    read_in_part,
    reply_sampling,
    with_speaker_stops,
)
from engine.reply import GenerationStats, ReplyStream
from engine.scheduler import Admission, Scheduler
from engine.settings import EngineSettings
from engine.summaries import Summaries
from engine.types import IncomingMessage, RoomRef
from errors import BusyError, CooldownError, HearthError, UserError
from memory import ConversationKey, MemoryStore, RoomSettings, clean_text
from personas import Persona, PersonaLibrary

log = logging.getLogger(__name__)

TRIGGER_MODES = ("mention", "all", "off")


@dataclass(frozen=True)
class Outcome:
    """What the adapter should do with a message.

    ``limited``: over a rate limit; the message was stored (a command was not run). ``notice``
    is set the first time in a limited period and None afterwards, when the bot stays silent.
    A ``reply`` or ``joined`` outcome has a ``notice`` when the message was too long to read whole.
    """

    kind: Literal["ignored", "reply", "joined", "busy", "limited"]
    admission: Admission | None = None
    notice: str | None = None
    retry_after: float | None = None


@dataclass
class _Room:
    ref: RoomRef
    conversation_id: int
    last_user: str = "User"
    last_prompt: AssembledPrompt | None = None
    speakers: set[str] = field(default_factory=set)
    turn: RoomTurn | None = None  # read by the prepare step, used by the turn it prepared


class Conversation:
    """Applies persona, memory and policy to each message, and schedules replies."""

    def __init__(
        self,
        settings: EngineSettings,
        store: MemoryStore,
        personas: PersonaLibrary,
        host: ModelHost,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock  # rate limits read time only through this seam, so tests can pass it
        self.limits = RateLimiter(settings.limits)
        self.store = store
        self.personas = personas
        self.host = host
        self.commands = CommandCore()
        self.persona_models = PersonaModels(host, settings.persona_models)
        self.scheduler = Scheduler(
            self._start_reply, settings.max_queue, settings.generation_timeout_s, prepare=self._prepare_turn
        )
        self.started_at = time.monotonic()
        self._rooms: dict[str, _Room] = {}
        self.last_stats: GenerationStats | None = None
        self.generated_tokens = 0
        self.generation_seconds = 0.0
        self.prompts = PromptBuilder(store, personas, settings.memory.recall_tokens)
        self.summaries = Summaries(store, host, self.scheduler, settings.memory)
        self.summarizer = self.summaries.summarizer

    async def start(self) -> None:
        from engine.commands.builtin import register_builtin_commands

        register_builtin_commands(self)
        await self.scheduler.start()

    async def close(self) -> None:
        """Stop the running reply, let its turn settle (so it is stored), then stop the scheduler."""
        self.scheduler.cancel_running()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.scheduler.wait_running_turn()
        await self.scheduler.close()

    # -- rooms ---------------------------------------------------------------------------

    async def room(self, ref: RoomRef) -> _Room:
        key = ref.label
        room = self._rooms.get(key)
        if room is None:
            conversation_id = await self.store.conversation_id(
                ConversationKey(ref.platform, ref.room_id, ref.thread_id)
            )
            room = self._rooms[key] = _Room(ref, conversation_id)
        return room

    async def room_turn(self, ref: RoomRef) -> RoomTurn:
        """The room's settings and persona, read once: pass this down rather than reading again."""
        room = await self.room(ref)
        settings = await self.store.room_settings(room.conversation_id)
        return RoomTurn(room.conversation_id, ref.label, settings, self._persona(settings, ref.label))

    async def persona_for(self, ref: RoomRef) -> Persona:
        return (await self.room_turn(ref)).persona

    def _persona(self, settings: RoomSettings, label: str) -> Persona:
        name = settings.persona or self.settings.default_persona
        try:
            return self.personas.get(name)
        except UserError:
            log.warning("room %s uses missing persona %r; falling back", label, name)
            return self.personas.get(self.settings.default_persona)

    # -- the entry point -----------------------------------------------------------------

    async def handle(self, msg: IncomingMessage) -> Outcome:
        """A chat message: store it, then decide whether it gets a reply. Never a command."""
        await self.remember(msg)
        turn = await self.room_turn(msg.room)  # the trigger policy and the notice both read it
        if not self.is_triggered(msg, turn):
            return Outcome("ignored")  # asks the bot for no work, so it takes no token
        now = self.clock()
        limited = self.limits.user_message(msg.author, msg.room.platform, now)
        if limited is None and not self.scheduler.would_join(msg.room.label):
            limited = self.limits.room_reply(msg.room.label, msg.author, now)
        if limited is not None:
            return _limited(limited)
        try:
            admission = self.scheduler.request(msg.room.label)
        except BusyError as exc:
            return Outcome("busy", notice=str(exc))
        admission.ticket.requested_by.add(msg.author.id)
        notice = await self._long_input_notice(msg, turn)
        return Outcome("joined" if admission.joined_existing else "reply", admission=admission, notice=notice)

    async def _long_input_notice(self, msg: IncomingMessage, turn: RoomTurn) -> str | None:
        """One line for the sender when the prompt will show only the beginning and end of ``msg``."""
        if not self.host.loaded:
            return None
        text = clean_text(self._message_text(msg))  # as stored, so as the prompt will show it
        try:
            backend = self.host.require()
            reserve = reply_sampling(backend.spec.sampling, turn.persona, turn.settings).max_tokens
            if fits_uncounted(text, message_token_limit(backend.spec.options.n_ctx, reserve)):
                return None  # the common case, decided here without a trip to a worker thread
            in_part = await asyncio.to_thread(read_in_part, text, backend, reserve)
        except HearthError:  # the reply itself will report what is wrong
            return None
        return LONG_INPUT_NOTICE if in_part else None

    async def remember(self, msg: IncomingMessage) -> None:
        """Store ``msg`` as context without answering it (history a bot sees when it joins late)."""
        room = await self.room(msg.room)
        await self.store.append(
            room.conversation_id,
            role="user",
            author_id=msg.author.id,
            author_name=msg.author.display_name,
            text=self._message_text(msg),
            platform_message_id=msg.message_id,
        )
        room.last_user = msg.author.display_name
        room.speakers.add(msg.author.display_name)

    async def already_stored(self, ref: RoomRef, message_id: str) -> bool:
        """True if this platform message is in memory: a replayed event must not be answered twice."""
        room = await self.room(ref)
        return await self.store.get_message(room.conversation_id, message_id) is not None

    async def locate(self, ref: RoomRef, message_id: str) -> RoomRef:
        """The conversation, the room itself or one of its threads, that holds ``message_id``.

        Edits and deletions on some platforms do not say which thread their message was in.
        Falls back to ``ref`` when no conversation of the room has it.
        """
        for conversation_id, key in await self.store.conversations():
            if (key.platform, key.room_id) != (ref.platform, ref.room_id):
                continue
            if await self.store.get_message(conversation_id, message_id) is not None:
                return RoomRef(key.platform, key.room_id, key.thread_id)
        return ref

    async def message_edited(self, ref: RoomRef, message_id: str, new_text: str) -> bool:
        """A user edited a message: memory follows (a covered summary is marked stale)."""
        room = await self.room(ref)
        return await self.store.edit_message(room.conversation_id, message_id, new_text) is not None

    async def message_deleted(self, ref: RoomRef, message_id: str) -> bool:
        """A user deleted a message: it leaves the prompt (a covered summary is marked stale)."""
        room = await self.room(ref)
        return await self.store.delete_message(room.conversation_id, message_id) is not None

    async def run_command(self, text: str, ctx: CommandContext) -> CommandResult:
        """The one entry for commands: the line after the adapter's own prefix (or slash command).

        Commands take a rate-limit token like chat does. A rate-limited command is not run.
        Its result is ephemeral (Discord must answer every interaction, and only the caller
        sees it); ``silent`` says the caller was already told in this period, so a platform
        without ephemeral output sends nothing.
        """
        limited = self.limits.user_message(ctx.author, ctx.room.platform, self.clock())
        if limited is not None:
            return CommandResult(limited.message, ok=False, ephemeral=True, silent=limited.notice is None)
        return await self.commands.process(text, ctx)

    @staticmethod
    def _message_text(msg: IncomingMessage) -> str:
        parts = [msg.text]
        for attachment in msg.attachments:
            if attachment.text is not None:
                parts.append(f"[attached file {attachment.filename}]\n{attachment.text}")
        return "\n\n".join(p for p in parts if p)

    @staticmethod
    def is_triggered(msg: IncomingMessage, turn: RoomTurn) -> bool:
        """Whether ``msg`` calls for a reply under the room's trigger mode and its persona's wake words."""
        if msg.author.is_bot:
            return False
        mode = turn.settings.trigger_mode or "mention"
        if mode == "off":
            return False
        if msg.addressed or mode == "all":
            return True
        return mentions_wake_word(msg.text, turn.persona.effective_wake_words)

    # -- replies -------------------------------------------------------------------------

    async def reply_now(self, msg: IncomingMessage) -> ReplyStream:
        """Store ``msg`` and wait for its reply stream (tests and benchmarks; adapters present the Outcome)."""
        outcome = await self.handle(msg)
        if outcome.kind == "limited":
            raise CooldownError(outcome.retry_after or 0.0, outcome.notice)
        if outcome.admission is None:
            raise UserError(outcome.notice or "that message does not call for a reply")
        return await outcome.admission.ticket.reply

    async def _prepare_turn(self, room_key: str) -> None:
        """Before the turn is admitted (nothing is generating): load the persona's preferred model.

        It cannot happen inside ``_start_reply``: a swap pauses the scheduler and waits for
        the running turn, which would be this very one. The settings read here are kept for
        that turn, so the model loaded and the persona that speaks agree.
        """
        room = self._rooms[room_key]
        room.turn = None
        room.turn = await self.room_turn(room.ref)
        await self.persona_models.apply(room.turn.persona)

    async def _start_reply(self, room_key: str) -> ReplyStream:
        room = self._rooms[room_key]
        turn = room.turn or await self.room_turn(room.ref)  # no prepare step ran: read it now
        room.turn = None
        backend = self.host.require()
        sampling = reply_sampling(backend.spec.sampling, turn.persona, turn.settings)
        prompt = await self.prompts.build(backend, turn, room.last_user, sampling.max_tokens)
        sampling = with_speaker_stops(sampling, room.speakers)
        room.last_prompt = prompt
        reply = backend.stream(GenerationRequest(prompt.tokens, sampling, room_key))
        reply.on_done(lambda stream: self._store_reply(room, turn.persona, stream))
        return reply

    async def _store_reply(self, room: _Room, persona: Persona, stream: ReplyStream) -> None:
        text = clean_reply(stream.partial_text(), persona.name)
        if stream.stats is not None:
            self.last_stats = stream.stats
            self.generated_tokens += stream.stats.completion_tokens
            self.generation_seconds += max(stream.stats.total_s - stream.stats.ttft_s, 0.0)
        if not text:
            return
        await self.store.append(
            room.conversation_id,
            role="assistant",
            author_id="hearth",
            author_name=persona.name,
            text=text,
            token_count=self.host.require().count_text_tokens(f"{persona.name}: {text}"),
        )
        await self.schedule_summary(room)

    async def schedule_summary(self, room: _Room, force: bool = False) -> None:
        """Queue a low-priority compaction of ``room`` if it needs one (or ``force``)."""
        await self.summaries.schedule(room.conversation_id, room.ref.label, lambda: room.last_prompt, force)


def _limited(limited: Limited) -> Outcome:
    return Outcome("limited", notice=limited.notice, retry_after=limited.retry_after)


def mentions_wake_word(text: str, wake_words: list[str]) -> bool:
    """True when a wake word appears as a whole word, in any case."""
    return any(word and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) for word in wake_words)


__all__ = ["TRIGGER_MODES", "Conversation", "Outcome", "mentions_wake_word"]
