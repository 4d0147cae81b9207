"""The engine's two entry points: ``handle`` for chat, ``run_command`` for commands.

Each adapter recognises its own command syntax (``/`` on the console, ``!hearth`` on
Matrix, slash commands on Discord) and sends command lines to ``run_command``; every
other message goes to ``handle``, where handlers run in a fixed order: the trigger
policy, then the rate limits, then the chat reply. Every chat message that reaches the
engine is stored, even when it gets no reply, is rate limited, or the queue is full.
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

from pydantic import ValidationError

from engine.backend import GenerationRequest
from engine.chat_template import ChatMessage
from engine.commands.core import CommandContext, CommandCore, CommandResult
from engine.context import AssembledPrompt, Turn, assemble, capped, prompt_user
from engine.limits import Limited, RateLimiter
from engine.model_host import ModelHost
from engine.persona_models import PersonaModels
from engine.reply import ReplyStream
from engine.sampling import SamplingParams
from engine.scheduler import Admission, Scheduler
from engine.settings import EngineSettings
from engine.types import Author, IncomingMessage, RoomRef
from errors import BusyError, CooldownError, UserError
from memory import ConversationKey, MemoryStore
from memory.summarizer import Summarizer, message_line
from personas import ActivatedEntry, Lorebook, LoreEntry, Persona, PersonaLibrary, activate, split_by_position

log = logging.getLogger(__name__)

TRIGGER_MODES = ("mention", "all", "off")
SUMMARY_SYSTEM = "You write short, factual summaries of chat logs."


@dataclass(frozen=True)
class Outcome:
    """What the adapter should do with a message.

    ``limited``: over a rate limit; the message was stored (a command was not run). ``notice``
    is set the first time in a limited period and None afterwards, when the bot stays silent.
    """

    kind: Literal["ignored", "reply", "joined", "busy", "limited"]
    admission: Admission | None = None
    notice: str | None = None
    retry_after: float | None = None

    @property
    def position(self) -> int:
        return self.admission.position if self.admission else 0


@dataclass
class _Room:
    ref: RoomRef
    conversation_id: int
    last_user: str = "User"
    last_prompt: AssembledPrompt | None = None
    speakers: set[str] = field(default_factory=set)


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
        self.last_stats = None
        self.generated_tokens = 0
        self.generation_seconds = 0.0
        memory = settings.memory
        self.summarizer = Summarizer(
            store,
            count_tokens=lambda text: self.host.require().count_text_tokens(text),
            write_summary=self._write_summary,
            summarize_at=memory.summarize_at,
            keep_recent=memory.keep_recent_turns,
            max_tokens=memory.summary_max_tokens,
        )

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

    async def persona_for(self, ref: RoomRef) -> Persona:
        room = await self.room(ref)
        settings = await self.store.room_settings(room.conversation_id)
        name = settings.persona or self.settings.default_persona
        try:
            return self.personas.get(name)
        except UserError:
            log.warning("room %s uses missing persona %r; falling back", ref.label, name)
            return self.personas.get(self.settings.default_persona)

    # -- the entry point -----------------------------------------------------------------

    async def handle(self, msg: IncomingMessage) -> Outcome:
        """A chat message: store it, then decide whether it gets a reply. Never a command."""
        await self.remember(msg)
        if not await self.is_triggered(msg):
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
        return Outcome("joined" if admission.joined_existing else "reply", admission=admission)

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

    async def is_triggered(self, msg: IncomingMessage) -> bool:
        if msg.author.is_bot:
            return False
        room = await self.room(msg.room)
        mode = (await self.store.room_settings(room.conversation_id)).trigger_mode or "mention"
        if mode == "off":
            return False
        if msg.addressed or mode == "all":
            return True
        persona = await self.persona_for(msg.room)
        return mentions_wake_word(msg.text, persona.effective_wake_words)

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
        the running turn, which would be this very one.
        """
        room = self._rooms[room_key]
        await self.persona_models.apply(await self.persona_for(room.ref))

    async def _start_reply(self, room_key: str) -> ReplyStream:
        room = self._rooms[room_key]
        backend = self.host.require()
        persona = await self.persona_for(room.ref)
        settings = await self.store.room_settings(room.conversation_id)
        sampling = (
            backend.spec.sampling.merged(persona.sampling.as_dict()).merged(settings.sampling).validated()
        )
        prompt = await self.build_prompt(room, persona, sampling)
        # Small models like to write the next user's line themselves; stop them there.
        stops = [f"\n{name}:" for name in sorted(room.speakers)]
        sampling = sampling.merged({"stop": [*sampling.stop, *stops]})
        room.last_prompt = prompt
        reply = backend.stream(GenerationRequest(prompt.tokens, sampling, room_key))
        reply.on_done(lambda stream: self._store_reply(room, persona, stream))
        return reply

    async def build_prompt(self, room: _Room, persona: Persona, sampling: SamplingParams) -> AssembledPrompt:
        backend = self.host.require()
        summary = await self.store.summary(room.conversation_id)
        after = summary.covers_through_id if summary else None
        stored = await self.store.messages(room.conversation_id, after_id=after)
        n_ctx = backend.spec.n_ctx
        turns = [Turn(m.role, m.author_name, capped(m.text, n_ctx)) for m in stored if m.role in ("user", "assistant")]
        user = prompt_user(turns)  # stable in a group, so the evaluated prefix stays reusable
        greeting = persona.render_greeting(user)
        if greeting and summary is None:
            turns.insert(0, Turn("assistant", persona.name, greeting))
        constant, keyed = await self.lore_for(room, persona, [t.text for t in turns])
        lore_before, lore_after = split_by_position(constant)
        volatile = "\n\n".join(
            part
            for part in (
                "\n\n".join(persona.render(a.entry.content, room.last_user).strip() for a in keyed),
                persona.render_post_history(room.last_user),
            )
            if part
        )
        return assemble(
            backend,
            system=persona.render_system(user, lore_before, lore_after),
            turns=turns,
            n_ctx=backend.spec.n_ctx,
            reserve=sampling.max_tokens,
            summary=summary.text if summary else "",
            volatile=volatile,
        )

    async def room_lorebook(self, room: _Room) -> Lorebook:
        """Entries a room manager added to this room with ``lore add``."""
        extra = (await self.store.room_settings(room.conversation_id)).extra
        entries = []
        for raw in extra.get("lore", []):
            try:
                entries.append(LoreEntry.model_validate(raw))
            except ValidationError:
                log.warning("skipping an unreadable room lore entry in %s", room.ref.label)
        return Lorebook(name="room", entries=entries)

    async def lore_for(
        self, room: _Room, persona: Persona, recent: list[str]
    ) -> tuple[list[ActivatedEntry], list[ActivatedEntry]]:
        """(constant, keyword-activated) lore. Constant lore sits in the stable system prefix;
        keyword lore changes turn by turn, so it goes late in the prompt."""
        books = [*self.personas.lorebooks_for(persona), await self.room_lorebook(room)]
        if not any(book.entries for book in books):
            return [], []
        backend = self.host.require()
        active = activate(books, recent, backend.count_text_tokens)
        return [a for a in active if a.entry.constant], [a for a in active if not a.entry.constant]

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

    # -- memory --------------------------------------------------------------------------

    def history_budget(self, room: _Room) -> int:
        """Tokens the recent turns may use: the window minus the reply reserve and the fixed prompt."""
        backend = self.host.require()
        prompt = room.last_prompt
        fixed = 0
        if prompt is not None and prompt.messages and prompt.messages[0].role == "system":
            fixed = len(backend.tokenize(backend.render(prompt.messages[:1], add_generation_prompt=False)))
        return max(backend.spec.n_ctx - backend.spec.sampling.max_tokens - fixed, 64)

    async def schedule_summary(self, room: _Room, force: bool = False) -> None:
        """Queue a low-priority compaction if the room needs one (or ``force``)."""
        budget = self.history_budget(room)
        if not force and not await self.summarizer.needs_work(room.conversation_id, budget):
            return

        async def compact() -> None:
            if await self.summarizer.run(room.conversation_id, self.history_budget(room), force=force):
                self.host.require().invalidate_room(room.ref.label)  # its prefix changed with the summary

        self.scheduler.background(f"summary:{room.ref.label}", compact)

    async def _write_summary(self, previous: str, messages, max_tokens: int) -> str:
        """Ask the model for an updated summary; cancelled cleanly if a reply pre-empts it."""

        backend = self.host.require()
        lines = "\n".join(message_line(m) for m in messages)
        words = max(max_tokens * 2 // 3, 20)
        room = backend.spec.n_ctx - max_tokens
        while True:
            request = (
                (f"Summary so far:\n{previous}\n\n" if previous else "")
                + f"New conversation lines:\n{lines}\n\n"
                + f"Write an updated summary of the whole conversation in at most {words} words. "
                "Keep names, facts, promises and decisions."
            )
            prompt = [ChatMessage("system", SUMMARY_SYSTEM), ChatMessage("user", request)]
            tokens = backend.tokenize(backend.render(prompt))
            if len(tokens) <= room or len(lines) < 16:
                break
            lines = lines[len(lines) // 4 :]  # an oversized chunk: keep its newest part
        sampling = SamplingParams(temperature=0.3, max_tokens=max_tokens, repeat_penalty=1.15)
        stream = backend.stream(GenerationRequest(tokens, sampling, None))
        try:
            return (await stream.text()).strip()
        except asyncio.CancelledError:
            stream.cancel()
            raise


def _limited(limited: Limited) -> Outcome:
    return Outcome("limited", notice=limited.notice, retry_after=limited.retry_after)


def mentions_wake_word(text: str, wake_words: list[str]) -> bool:
    """True when a wake word appears as a whole word, in any case."""
    return any(word and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) for word in wake_words)


def clean_reply(text: str, persona_name: str) -> str:
    """Drop a leading "Name:" the model sometimes writes, and surrounding blank space."""
    text = text.strip()
    prefix = f"{persona_name}:"
    if text.lower().startswith(prefix.lower()):
        text = text[len(prefix) :].strip()
    return text


__all__ = ["Author", "Conversation", "Outcome", "mentions_wake_word"]
