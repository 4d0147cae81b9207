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
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from engine.backend import GenerationRequest, cache_key
from engine.cast import cast_keys, group_options
from engine.cast_warmup import warm_cast
from engine.commands.core import CommandContext, CommandCore, CommandResult
from engine.context import AssembledPrompt, fits_uncounted, message_token_limit
from engine.group import GroupPlan, Member, choose_speakers
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
from engine.recall import Recall
from engine.reply import GenerationStats, ReplyStream
from engine.scheduler import Admission, Scheduler, Ticket
from engine.settings import EngineSettings
from engine.summaries import Summaries
from engine.types import Attachment, IncomingMessage, RoomRef, Speaker
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
    speaker: str | None = None  # the cast member the prepared turn is for (None: one persona)
    plan: GroupPlan | None = None  # cast members still to answer; a user speaking clears it
    addressed: list[str] = field(default_factory=list)  # members users replied to, for the next plan
    asked: list[str] = field(default_factory=list)  # what users said since the last plan: names pick speakers
    last_speaker: str | None = None  # the cast member who spoke last


class Conversation:
    """Applies persona, memory and policy to each message, and schedules replies."""

    def __init__(
        self,
        settings: EngineSettings,
        store: MemoryStore,
        personas: PersonaLibrary,
        host: ModelHost,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock  # rate limits read time only through this seam, so tests can pass it
        self.rng = rng or random.Random()  # who speaks in a cast; tests pass a seeded one
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
        recall = Recall(store, settings.memory, settings.model.models_dir, quiet=self.scheduler.wait_running_turn)
        self.prompts = PromptBuilder(store, personas, settings.memory.recall_tokens, recall)
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
        cast = self._cast(settings, ref.label)
        return RoomTurn(room.conversation_id, ref.label, settings, cast[0][1], tuple(cast))

    async def persona_for(self, ref: RoomRef) -> Persona:
        return (await self.room_turn(ref)).persona

    def _cast(self, settings: RoomSettings, label: str) -> list[tuple[str, Persona]]:
        """(key, persona) of each cast member that exists; the default persona when none does."""
        members = []
        for key in cast_keys(settings, self.settings.default_persona):
            try:
                members.append((key, self.personas.get(key)))
            except UserError:
                log.warning("room %s uses missing persona %r; leaving it out", label, key)
        return members or [(self.settings.default_persona, self.personas.get(self.settings.default_persona))]

    # -- the entry point -----------------------------------------------------------------

    async def handle(self, msg: IncomingMessage) -> Outcome:
        """A chat message: store it, then decide whether it gets a reply. Never a command."""
        await self.remember(msg)
        turn = await self.room_turn(msg.room)  # the trigger policy and the notice both read it
        self._user_spoke(await self.room(msg.room), msg, turn)
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

    @staticmethod
    def _user_spoke(room: _Room, msg: IncomingMessage, turn: RoomTurn) -> None:
        """A user speaking ends the cast's exchange; one they replied to answers next."""
        room.plan = None
        room.asked = [*room.asked[-7:], msg.text]
        replied = replied_member(msg, turn)
        if replied is not None and not msg.author.is_bot:
            room.addressed.append(replied)

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
        edited = await self.store.edit_message(room.conversation_id, message_id, new_text) is not None
        if edited:
            self.forget_cached(room)
        return edited

    async def message_deleted(self, ref: RoomRef, message_id: str) -> bool:
        """A user deleted a message: it leaves the prompt (a covered summary is marked stale)."""
        room = await self.room(ref)
        deleted = await self.store.delete_message(room.conversation_id, message_id) is not None
        if deleted:
            self.forget_cached(room)
        return deleted

    def forget_cached(self, room: _Room) -> None:
        """Drop the model's evaluated states of a room that lost or changed messages.

        Cells computed after a message (or after a recalled block that quoted it) keep it in
        view, so none of them may serve a later turn, in RAM or on disk.
        """
        if self.host.loaded:
            self.host.require().invalidate_room(room.ref.label)

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
        if msg.addressed or mode == "all" or replied_member(msg, turn) is not None:
            return True
        return any(mentions_wake_word(msg.text, persona.effective_wake_words) for persona in turn.personas)

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
        room.turn, room.speaker = await self._speaking_turn(room, await self.room_turn(room.ref))
        await self.persona_models.apply(room.turn.persona)

    async def _speaking_turn(self, room: _Room, turn: RoomTurn) -> tuple[RoomTurn, str | None]:
        """The turn as its speaker sees it: the cast member whose turn it is (a new plan when the
        last one is spent), or the room's one persona (None)."""
        if not turn.is_group:
            return turn, None
        if room.plan is None or not room.plan.queue:
            room.plan = await self._new_plan(room, turn)
        # a name (``persona speak``, ``regenerate``) or a key; gone from the cast since: the first member
        key = member_named(room.plan.queue.pop(0), turn) or turn.cast[0][0]
        return replace(turn, persona=turn.members[key]), key

    async def _new_plan(self, room: _Room, turn: RoomTurn) -> GroupPlan:
        """Who answers the newest user message(s): addressed characters first, then ``group_mode``."""
        options = group_options(turn.settings)
        if room.last_speaker is None:  # after a restart: the newest stored character line says
            recent = await self.store.messages(turn.conversation_id, last=8)
            said = [message.author_name for message in recent if message.role == "assistant"]
            room.last_speaker = member_named(said[-1], turn) if said else None
        addressed, room.addressed = room.addressed, []
        asked, room.asked = room.asked, []
        queue = choose_speakers(
            options.mode,
            cast_members(turn),
            text="\n".join(asked),
            last_speaker=room.last_speaker,
            count=options.replies,
            rng=self.rng,
            addressed=addressed,
        )
        return GroupPlan(queue, options.chain)

    def plan_speaker(self, ref: RoomRef, name: str) -> None:
        """This character (key or display name) answers the room's next turn, alone: ``persona speak``,
        and ``regenerate``, which asks the same character again. Ignored in a room with one persona."""
        room = self._rooms[ref.label]
        room.plan = GroupPlan([name], 0)

    async def _start_reply(self, room_key: str) -> ReplyStream:
        room = self._rooms[room_key]
        turn, key = room.turn, room.speaker
        if turn is None:  # no prepare step ran: read it now
            turn, key = await self._speaking_turn(room, await self.room_turn(room.ref))
        room.turn, room.speaker = None, None
        backend = self.host.require()
        sampling = reply_sampling(backend.spec.sampling, turn.persona, turn.settings)
        prompt = await self.prompts.build(backend, turn, room.last_user, sampling.max_tokens)
        cast = {persona.name for persona in turn.personas}
        # In a cast, a new "\nOwnName:" line means the character has ended its turn and the model
        # goes on writing the chat log (SillyTavern stops group chats at every member's name too).
        sampling = with_speaker_stops(sampling, room.speakers | (cast if len(cast) > 1 else set()))
        room.last_prompt = prompt
        request = GenerationRequest(prompt.tokens, sampling, cache_key(room_key, key), prompt.volatile_span)
        reply = backend.stream(request)
        reply.leading_names = (turn.persona.name,)
        if key is not None:
            reply.speaker = self.speaker(key, turn.persona)
        ticket, plan = self.scheduler.running_ticket(room_key), room.plan
        reply.on_done(lambda stream: self._reply_done(room, turn, key, stream, (ticket, plan)))
        return reply

    def speaker(self, key: str, persona: Persona) -> Speaker:
        """How adapters show a cast member: its name, key and card image."""
        image = self.personas.avatar_png(persona)
        avatar = Attachment(f"{key}.png", "image/png", len(image), data=image) if image else None
        return Speaker(persona.name, key, avatar)

    async def _reply_done(
        self,
        room: _Room,
        turn: RoomTurn,
        key: str | None,
        stream: ReplyStream,
        chain: tuple[Ticket | None, GroupPlan | None],
    ) -> None:
        """Store the reply, then chain the next cast member's turn onto this one's ticket."""
        text = await self._store_reply(room, turn.persona, stream)
        if key is not None:
            room.last_speaker = key
            self._warm_cast_later(room)
        ticket, plan = chain
        if ticket is None:
            return
        if stream.stats is not None and stream.stats.finish_reason == "cancelled":
            room.plan = None  # stopped: nobody else in the cast answers this message either
        follow_up = self._follow_up(room, turn, key, text, plan)
        if follow_up is not None:
            follow_up.ticket.requested_by.update(ticket.requested_by)
            ticket.follow_up.set_result(follow_up)
        else:
            ticket.end_follow_ups()

    def _warm_cast_later(self, room: _Room) -> None:
        """Bring the other characters' cached states up to this reply while the room is idle
        (``engine.cast_warmup``): in-process models only, where a state is kept per character."""
        backend = self.host.backend
        if backend is None or backend.kind != "local":
            return

        async def warm() -> None:
            turn = await self.room_turn(room.ref)
            if turn.is_group and self.host.loaded:
                await warm_cast(
                    self.host.require(),
                    self.prompts,
                    turn,
                    room_key=room.ref.label,
                    last_speaker=room.last_speaker,
                    user=room.last_user,
                )

        self.scheduler.background(f"warm:{room.ref.label}", warm)

    def _follow_up(
        self, room: _Room, turn: RoomTurn, key: str | None, text: str, plan: GroupPlan | None
    ) -> Admission | None:
        """The next cast member's turn for the same message, if the plan holds one and no user spoke."""
        if key is None or plan is None or room.plan is not plan:
            return None  # one persona, or a user spoke since (their message gets its own speakers)
        if not plan.queue and plan.chain_left > 0 and text:
            others = [member for member in cast_members(turn) if member.key != key]
            options = group_options(turn.settings)
            plan.queue.extend(
                choose_speakers(options.mode, others, text=text, last_speaker=key, count=1, rng=self.rng)
            )
            plan.chain_left -= 1
        if not plan.queue or self.scheduler.would_join(room.ref.label):
            room.plan = None
            return None
        try:
            return self.scheduler.request(room.ref.label)
        except BusyError:
            room.plan = None
            return None

    async def _store_reply(self, room: _Room, persona: Persona, stream: ReplyStream) -> str:
        """Store the reply's text (cleaned of a leading name), and return it ('' when empty)."""
        text = clean_reply(stream.partial_text(), persona.name)
        if stream.stats is not None:
            self.last_stats = stream.stats
            self.generated_tokens += stream.stats.completion_tokens
            self.generation_seconds += max(stream.stats.total_s - stream.stats.ttft_s, 0.0)
        if not text:
            return ""
        await self.store.append(
            room.conversation_id,
            role="assistant",
            author_id="hearth",
            author_name=persona.name,
            text=text,
            token_count=self.host.require().count_text_tokens(f"{persona.name}: {text}"),
        )
        await self.schedule_summary(room)
        return text

    async def schedule_summary(self, room: _Room, force: bool = False) -> None:
        """Queue a low-priority compaction of ``room`` if it needs one (or ``force``)."""
        await self.summaries.schedule(room.conversation_id, room.ref.label, lambda: room.last_prompt, force)


def _limited(limited: Limited) -> Outcome:
    return Outcome("limited", notice=limited.notice, retry_after=limited.retry_after)


def cast_members(turn: RoomTurn) -> list[Member]:
    """The cast as the speaker policy sees it."""
    return [
        Member(key, persona.name, persona.effective_talkativeness, tuple(persona.wake_words or ()))
        for key, persona in turn.cast
    ]


def member_named(name: str, turn: RoomTurn) -> str | None:
    """The key of the cast member called ``name`` (display name or key), if any."""
    wanted = name.strip().lower()
    return next((key for key, persona in turn.cast if wanted in (persona.name.lower(), key)), None)


def replied_member(msg: IncomingMessage, turn: RoomTurn) -> str | None:
    """The key of the cast member ``msg`` replies to (the adapter names it), if any."""
    return member_named(msg.replied_to, turn) if msg.replied_to is not None else None


def mentions_wake_word(text: str, wake_words: list[str]) -> bool:
    """True when a wake word appears as a whole word, in any case."""
    return any(word and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) for word in wake_words)


__all__ = ["TRIGGER_MODES", "Conversation", "Outcome", "mentions_wake_word"]
