"""Many rooms generating at once in one llama context: hearth's own continuous-batching loop.

The context has ``parallel`` sequences with split KV (each its own cells and attention:
measured faster than unified KV on a CPU with long persona prompts, README "Many rooms at
once"). Each room that generates holds a sequence, and its cells stay there after the
turn, so rooms taking turns reuse their prefix without a park and restore. Only when a
room needs a sequence that another room's idle cells hold are those parked in the
StateCache (RAM LRU, then disk) and the newcomer's restored.

One step decodes one batch: the next token of every streaming room, plus a chunk of each
joining room's prompt, so a long cold prompt never freezes the rooms already streaming.
A turn joins between steps and leaves when it ends. Worker thread only (``run``), except
``submit``, which any thread may call.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from engine.backend import GenerationRequest
from engine.flash_prefill import FlashPrefill
from engine.reasoning import ThinkFilter
from engine.reply import Done, Failed, GenerationStats, ReplyStream, push_split
from engine.seq_state import cut_cells, read_sequence_state, write_sequence_state
from engine.sequence_sampler import SequenceSampler, TextAssembler
from engine.state_cache import RoomState, StateCache, common_prefix, same_room
from engine.volatile_span import VolatileSpans
from errors import HearthError, ModelError

log = logging.getLogger(__name__)

# Prompt tokens a joining room may add to a step while others stream: each step then costs
# the streaming rooms one token's wait of about this many prompt tokens.
JOIN_CHUNK = 64
# A shared prefix shorter than this is evaluated rather than copied from another sequence:
# the copy moves the other room's whole state (~23 KB a token), about the cost of a few tokens.
BORROW_MIN_TOKENS = 32


@dataclass
class _Slot:
    """One sequence of the context, and whose cells it holds."""

    seq: int
    room: str | None = None
    tokens: list[int] = field(default_factory=list)  # the tokens whose cells are in the sequence
    job: _Job | None = None
    used_at: float = 0.0
    # A cut moved cells back; llama.cpp re-rotates their keys at the next decode, so until then
    # the sequence's cells are neither copied to another sequence nor saved.
    shift_pending: bool = False


@dataclass
class _Job:
    """One turn: its prompt, its sampler, and how far it got."""

    request: GenerationRequest
    reply: ReplyStream
    prompt: list[int]
    stop: list[str]
    slot: _Slot | None = None
    sampler: SequenceSampler | None = None
    text: TextAssembler | None = None
    think: ThinkFilter = field(default_factory=ThinkFilter)
    started: float = 0.0
    first_token_at: float = 0.0
    max_tokens: int = 0
    reused: int = 0  # prompt tokens found in the sequence already
    cut: int = 0  # cells of last turn's volatile block taken out first
    restored: bool = False
    flash: bool = False  # its prompt is being evaluated in the flash-attention context
    prefilled: int = 0  # prompt tokens the flash-attention context evaluated
    evaluated: int = 0  # prompt tokens evaluated for this turn, here or there
    next_token: int = -1  # sampled, not yet evaluated
    produced: int = 0
    finish: str = ""

    @property
    def prompt_left(self) -> int:
        assert self.slot is not None
        return len(self.prompt) - len(self.slot.tokens) if self.next_token < 0 else 0


class _FlashPlan:
    """The flash-attention prefill of the batched path: one room's prompt at a time."""

    def __init__(self, prefill: FlashPrefill, min_tokens: int) -> None:
        self.prefill = prefill
        self.min_tokens = min_tokens
        self.job: _Job | None = None

    def worth_it(self, prompt: list[int], reused: int) -> bool:
        """``FlashPrefill.worth_it``, while no other room's prompt is in the flash context. The
        decoder asks only while no room streams (``BatchDecoder._plan_flash``)."""
        return self.job is None and self.prefill.worth_it(prompt, reused, self.min_tokens)


class BatchDecoder:
    """A context of ``parallel`` sequences on a loaded Llama's weights, driven step by step."""

    def __init__(
        self,
        llm: Any,
        parallel: int,
        n_ctx: int,
        states: StateCache | None,
        stop: Sequence[str] = (),
        unified: bool = False,
        spans: VolatileSpans | None = None,
        n_batch: int | None = None,
        n_ubatch: int | None = None,
    ) -> None:
        self.parallel = parallel
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max = parallel
        params.kv_unified = unified
        params.n_ctx = n_ctx if unified else n_ctx * parallel  # split: every sequence gets n_ctx
        # The Llama's own (tokenizer-sized) context caps its batch at its n_ctx: 256 tokens a
        # prompt step measured ~35% slower prefill than the single path's 512 (bench.concurrent).
        if n_batch is not None:
            params.n_batch = min(n_batch, n_ctx)
            params.n_ubatch = min(n_ubatch or n_batch, params.n_batch)
        params.no_perf = True
        from llama_cpp import _internals

        self._context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self.ctx = self._context.ctx
        self._memory = llama_cpp.llama_get_memory(self.ctx)
        self._llm = llm
        self.n_ctx = n_ctx
        self.n_batch = int(params.n_batch)
        self.n_ubatch = int(params.n_ubatch)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.states = states
        self.spans = spans or VolatileSpans()
        self.template_stop = list(stop)
        self.share_prefixes = True  # start a room from another's cells of the same prompt prefix
        self.banned: tuple[int, ...] = ()  # tokens no reply may choose (the benchmark bans EOS)
        self._slots = [_Slot(seq) for seq in range(parallel)]
        self._incoming: deque[_Job] = deque()
        self._forgotten: list[str] = []  # rooms to invalidate at the next step boundary
        self._waiting: deque[_Job] = deque()  # admitted, but every sequence is busy
        self._lock = threading.Lock()
        self._running = False
        self._abortable: list[_Job] = []  # the jobs of a prompt-only step; the callback reads it
        # Kept on the instance: llama.cpp holds only the C pointer.
        self._abort_callback = llama_cpp.ggml_abort_callback(self._should_abort)
        self._no_abort_callback = llama_cpp.ggml_abort_callback()  # NULL: llama.cpp skips the check
        self._armed = False
        self._flash: _FlashPlan | None = None

    def use_flash_prefill(self, llm: Any, min_tokens: int) -> FlashPrefill:
        """Evaluate long cold prompts in a flash-attention context of one sequence, then load the
        cells into the room's sequence (``engine.flash_prefill``). The caller closes it."""
        sizes = {"n_ctx": self.n_ctx, "n_batch": self.n_batch, "n_ubatch": self.n_ubatch}
        prefill = FlashPrefill(llm, self._abort_callback, **sizes)
        self._flash = _FlashPlan(prefill, min_tokens)
        return prefill

    @property
    def generating(self) -> int:
        """Rooms holding a sequence right now (for ``stats``)."""
        return sum(1 for slot in self._slots if slot.job is not None)

    # -- any thread ------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, reply: ReplyStream, start: Callable[[], None]) -> None:
        """Queue a turn; ``start`` schedules ``run`` on the worker thread if it is not running."""
        stop = list(dict.fromkeys([*self.template_stop, *request.sampling.stop]))
        with self._lock:
            self._incoming.append(_Job(request, reply, list(request.prompt_tokens), stop))
            if self._running:
                return
            self._running = True
        start()

    def invalidate(self, room: str, start: Callable[[], None]) -> None:
        """Drop a room's evaluated cells, saved states and spans at the next step boundary
        (``LlamaBackend.invalidate_room``); ``start`` runs the loop if it is not running."""
        with self._lock:
            self._forgotten.append(room)
            if self._running:
                return
            self._running = True
        start()

    # -- worker thread ---------------------------------------------------------------------

    def run(self) -> None:
        """Step until no turn is left. Runs on the worker thread; other work waits behind it."""
        while True:
            with self._lock:
                arrived = list(self._incoming)
                self._incoming.clear()
                forgotten, self._forgotten = self._forgotten, []
                if not arrived and not forgotten and not self._busy():
                    self._running = False
                    return
            try:
                for room in forgotten:
                    self._forget(room)
                self._waiting.extend(arrived)
                self._admit()
                self._step()
            except Exception as exc:  # never leave a reply hanging, whatever broke
                log.exception("batched generation failed")
                error = exc if isinstance(exc, HearthError) else ModelError(f"generation failed: {exc}", original=exc)
                for job in [*self._waiting, *(s.job for s in self._slots if s.job)]:
                    self._end(job, error)
                self._waiting.clear()
                self._reset()

    def _busy(self) -> bool:
        return bool(self._waiting) or any(slot.job for slot in self._slots)

    def _forget(self, room: str) -> None:
        """Empty the idle sequences holding the room's (or its cast's) cells, and drop its states.

        A sequence still generating for the room keeps its cells for that reply: its prompt
        was built from the memory before the change.
        """
        self.spans.forget(room)
        if self.states is not None:
            self.states.invalidate(room)
        for slot in self._slots:
            if slot.job is None and slot.room is not None and same_room(slot.room, room):
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                slot.tokens.clear()
                slot.room = None

    def _admit(self) -> None:
        """Give waiting turns a sequence, parking idle cells if needed, in arrival order."""
        while self._waiting:
            job = self._waiting[0]
            if job.reply.cancelled:
                self._waiting.popleft()
                job.started = job.started or time.perf_counter()
                self._end(job)
                continue
            slot = self._free_slot(job.request.room_key)
            if slot is None:
                return
            self._waiting.popleft()
            self._start(job, slot)

    def _free_slot(self, room: str | None) -> _Slot | None:
        free = [slot for slot in self._slots if slot.job is None]
        if not free:
            return None
        own = next((slot for slot in free if room is not None and slot.room == room), None)
        if own is not None:
            return own
        empty = next((slot for slot in free if not slot.tokens), None)
        return empty or min(free, key=lambda slot: slot.used_at)

    def _start(self, job: _Job, slot: _Slot) -> None:
        job.started = time.perf_counter()  # TTFT includes parking and restoring room states
        room = job.request.room_key
        if len(job.prompt) + 1 > self.n_ctx:
            self._end(job, ModelError(f"prompt of {len(job.prompt)} tokens does not fit n_ctx {self.n_ctx}"))
            return
        if slot.room != room or room is None:
            # Another room's cells of the same tokens are as good as the room's own.
            kept = common_prefix(slot.tokens, job.prompt) if self.share_prefixes else 0
            self._park(slot, keep=kept)
            slot.room = room
            job.restored = self._restore(slot, job.prompt)
            if not job.restored and self.share_prefixes:
                self._borrow_prefix(slot, job.prompt)
        job.cut = self._cut_last_volatile(slot, job.prompt)
        self.spans.record(room, job.prompt, job.request.volatile_span)
        job.reused = min(common_prefix(slot.tokens, job.prompt), len(job.prompt) - 1)
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, job.reused, -1)
        del slot.tokens[job.reused :]
        slot.job, job.slot = job, slot
        sampling = job.request.sampling
        job.max_tokens = min(sampling.max_tokens, self.n_ctx - len(job.prompt))
        job.sampler = SequenceSampler(sampling, self._n_vocab, self.banned)
        job.text = TextAssembler(job.stop)

    def _cut_last_volatile(self, slot: _Slot, prompt: list[int]) -> int:
        """Take the room's last volatile block out of its sequence when that lets ``prompt`` reuse
        what followed it (``engine.volatile_span``); how many cells went."""
        drop = self.spans.plan(slot.room, slot.tokens, prompt)
        if drop is None or not cut_cells(self._memory, drop.start, drop.end, slot.seq):
            return 0
        slot.shift_pending = True
        slot.tokens[:] = drop.kept
        return drop.size

    def _park(self, slot: _Slot, keep: int = 0) -> None:
        """Save an idle sequence's cells under its room (if any), then empty it but for the
        first ``keep`` cells (the next room's prompt starts with the same tokens)."""
        if slot.room is not None and slot.shift_pending and self.states is not None:
            self.states.discard_ram(slot.room)  # a turn cancelled before its first decode after a cut
        elif slot.room is not None and slot.tokens and self.states is not None:
            previous = self.states.peek(slot.room)
            data = read_sequence_state(self.ctx, reuse=previous.data if previous else None, seq_id=slot.seq)
            if data:
                self.states.put(slot.room, RoomState(tuple(slot.tokens), data))
            else:
                self.states.discard_ram(slot.room)
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, keep, -1)
        del slot.tokens[keep:]
        slot.room = None

    def _restore(self, slot: _Slot, prompt: list[int]) -> bool:
        """Load the room's saved cells into the sequence if they share more of the prompt than it holds."""
        if slot.room is None or self.states is None:
            return False
        state = self.states.get(slot.room)
        if state is None or common_prefix(state.tokens, prompt) <= len(slot.tokens):
            return False
        if not write_sequence_state(self.ctx, state.data, slot.seq):
            log.warning("could not restore a room state; evaluating from scratch")
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
            return False
        slot.tokens[:] = state.tokens
        return True

    def _borrow_prefix(self, slot: _Slot, prompt: list[int]) -> int:
        """Copy the longest stretch of ``prompt`` that another sequence holds into this one.

        Rooms with one persona share their system prompt, so a room without a saved state
        (a new room, or one evicted from the cache) starts from another's cells instead of
        evaluating it all: the single path gets the same from the resident room's cells.
        A cell depends only on the tokens up to it, so nothing of the other room comes along.
        The copy goes through a serialized state, as llama.cpp copies across split-KV streams
        only lazily, at the next decode, and this sequence's state could change before that.
        """
        donors = [
            (common_prefix(other.tokens, prompt), other)
            for other in self._slots
            if other is not slot and other.tokens and not other.shift_pending
        ]
        shared, donor = max(donors, key=lambda pair: pair[0], default=(0, None))
        shared = min(shared, len(prompt) - 1)
        if donor is None or shared < len(slot.tokens) + BORROW_MIN_TOKENS:
            return 0
        data = read_sequence_state(self.ctx, seq_id=donor.seq)
        if not data or not write_sequence_state(self.ctx, data, slot.seq):
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
            slot.tokens.clear()
            return 0
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, shared, -1)
        slot.tokens[:] = prompt[:shared]
        return shared

    def park_all(self) -> None:
        """Save every sequence's cells (at close), so the state cache can flush them to disk."""
        for slot in self._slots:
            if slot.job is None:
                self._park(slot)

    def _reset(self) -> None:
        llama_cpp.llama_memory_clear(self._memory, False)
        for slot in self._slots:
            slot.tokens.clear()
            slot.room = None

    # -- one step ------------------------------------------------------------------------------

    def _step(self) -> None:
        """Decode one batch: every streaming room's next token, then prompt chunks of joiners."""
        jobs = [slot.job for slot in self._slots if slot.job is not None]
        for job in jobs:
            if job.reply.cancelled:
                job.finish = "cancelled"
                self._end(job)
        # Prompt budget and the flash prefill go to the turns that got a sequence first, not to
        # the lowest sequence: a newcomer in a freed low sequence must not pass earlier rooms.
        jobs = sorted((job for job in jobs if job.slot is not None), key=lambda job: job.started)
        if not jobs:
            return
        decoding = [job for job in jobs if job.next_token >= 0]
        waiting = self._wait_for_shared_prefixes(jobs)
        flashing = self._plan_flash(jobs, decoding, waiting)
        rows: list[tuple[_Job, int]] = []  # (job, batch row) whose logits are sampled
        n = 0
        for job in decoding:
            assert job.slot is not None
            self._put(n, job.next_token, len(job.slot.tokens), job.slot.seq, True)
            rows.append((job, n))
            n += 1
        budget = min(JOIN_CHUNK, self.n_batch - n) if decoding else self.n_batch
        fed: dict[int, list[int]] = {}
        for job in jobs:
            if job.next_token >= 0 or job.flash or budget <= 0:
                continue
            if flashing and job.prompt_left > 1:  # beside a flash step, only a last token for the logits
                continue
            if job in waiting:
                continue
            assert job.slot is not None
            done = len(job.slot.tokens)
            chunk = job.prompt[done : done + budget]
            last = done + len(chunk) == len(job.prompt)
            for offset, token in enumerate(chunk):
                self._put(n, token, done + offset, job.slot.seq, last and offset == len(chunk) - 1)
                n += 1
            if last:
                rows.append((job, n - 1))
            fed[id(job)] = chunk
            budget -= len(chunk)
        self._batch.n_tokens = n
        if n == 0:  # a step of the flash-attention prefill alone
            self._flash_step()
            return
        plain = [job for job in jobs if not job.flash]
        self._arm([] if decoding else plain)
        code = llama_cpp.llama_decode(self.ctx, self._batch)
        self._abortable = []
        if code == 2:  # the abort callback: every room in this prompt-only step was cancelled
            for job in plain:
                assert job.slot is not None
                llama_cpp.llama_memory_seq_rm(self._memory, job.slot.seq, len(job.slot.tokens), -1)
                job.finish = "cancelled"
                self._end(job)
            return
        if code != 0:
            raise ModelError(f"llama_decode failed with code {code}")
        for slot in self._slots:
            slot.shift_pending = False  # the decode applied every pending K-shift
        for job in plain:
            assert job.slot is not None
            if job.next_token >= 0:
                job.slot.tokens.append(job.next_token)
                job.next_token = -1
            chunk = fed.get(id(job), [])
            job.slot.tokens.extend(chunk)
            job.evaluated += len(chunk)
        for job, row in rows:
            self._take(job, row)
        if flashing:
            self._flash_step()

    def _wait_for_shared_prefixes(self, jobs: list[_Job]) -> list[_Job]:
        """The joiners that wait this step for an earlier joiner to evaluate the prompt prefix
        they share; a joiner with nothing left to wait for copies it now (``_borrow_prefix``).

        Rooms with one persona that start at once (a burst of new rooms) would otherwise each
        evaluate the whole system prompt. ``jobs`` is in arrival order; only earlier ones lead.
        """
        waiting: list[_Job] = []
        if not self.share_prefixes:
            return waiting
        for job in jobs:
            if job.evaluated or job.flash or job.slot is None:
                continue  # its prompt has begun: what it holds is what it keeps
            if self._leader_still_evaluating(job, jobs):
                waiting.append(job)
            else:
                self._borrow_prefix(job.slot, job.prompt)
        return waiting

    @staticmethod
    def _leader_still_evaluating(job: _Job, jobs: list[_Job]) -> bool:
        """Whether a joiner before ``job`` is still evaluating (or cannot yet lend) a prefix of
        ``job``'s prompt worth copying rather than evaluating."""
        slot = job.slot
        assert slot is not None
        for leader in jobs:
            if leader is job:
                return False
            if leader.slot is None:
                continue
            shared = min(common_prefix(leader.prompt, job.prompt), len(job.prompt) - 1)
            if shared < len(slot.tokens) + BORROW_MIN_TOKENS:
                continue
            if len(leader.slot.tokens) < shared or leader.slot.shift_pending:
                return True
        return False

    def _plan_flash(self, jobs: list[_Job], decoding: list[_Job], waiting: list[_Job]) -> bool:
        """Whether this step is a flash-attention prefill step, choosing its room if needed.

        Only while no room streams: then the step is the flash prefill alone, and other joiners
        wait for it as they would wait for each other's chunks; ``waiting`` ones are not
        chosen (they copy a shared prefix soon). Once a room streams, the flash
        job hands over what it evaluated and the rest joins the batch: two contexts decoding in
        one step lost to one batch (bench.concurrent's cold burst: p95 45 s against 40 s).
        """
        plan = self._flash
        if plan is None:
            return False
        if plan.job is not None and decoding:
            self._hand_over(plan, plan.job)
        if plan.job is None and not decoding:
            for job in jobs:
                assert job.slot is not None
                if job in waiting:
                    continue
                if plan.worth_it(job.prompt, len(job.slot.tokens)):
                    plan.job, job.flash = job, True
                    break
        return plan.job is not None

    def _flash_step(self) -> None:
        """Evaluate the next chunk of the flash job's prompt in the flash-attention context,
        and hand its cells over once all but the last token are in: the plain step then
        evaluates that token for the logits."""
        plan = self._flash
        job = plan.job if plan is not None else None
        if plan is None or job is None or job.slot is None:
            return
        head = job.prompt[:-1]
        self._abortable = [job]  # the flash context calls the same abort callback
        done = plan.prefill.advance(head, self.n_batch)
        self._abortable = []
        if done is None:  # cancelled inside the chunk
            job.finish = "cancelled"
            self._end(job)
            return
        job.prefilled += done
        job.evaluated += done
        if not plan.prefill.pending(head):
            self._hand_over(plan, job)

    def _hand_over(self, plan: _FlashPlan, job: _Job) -> None:
        """Load what the flash context holds of the job's prompt into its sequence (all of it,
        or as far as it got when a room began to stream), and go on in the plain context."""
        plan.job, job.flash = None, False
        slot = job.slot
        assert slot is not None
        head = job.prompt[:-1]
        held = len(head) - plan.prefill.pending(head)
        if held <= len(slot.tokens):
            return  # it got no further than the sequence's own cells
        state = plan.prefill.handover(self.parallel)
        if state is not None and write_sequence_state(self.ctx, state, slot.seq):
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, held, -1)  # another prompt's cells past it
            slot.tokens[:] = head[:held]
            return
        if state is not None:
            log.warning("llama.cpp refused a flash-attention prefill's cells; prompts are evaluated plainly")
            plan.prefill.usable = False
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)  # a refused load may leave some
        slot.tokens.clear()

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _take(self, job: _Job, row: int) -> None:
        """Sample the job's next token from batch row ``row`` and stream its text."""
        assert job.sampler is not None and job.text is not None and job.slot is not None
        token = job.sampler.sample(self.ctx, row)
        if not job.first_token_at:
            job.first_token_at = time.perf_counter()
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            job.finish = "stop"
            self._end(job)
            return
        job.produced += 1
        self._emit(job.reply, *job.think.feed(job.text.feed(self._piece(token))))
        if job.text.stopped:
            job.finish = "stop"
        elif job.produced >= job.max_tokens:
            job.finish = "length"
        elif job.reply.cancelled:
            job.finish = "cancelled"
        else:
            job.next_token = token
            return
        self._end(job)

    def _piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:size]

    def _end(self, job: _Job, error: HearthError | None = None) -> None:
        """Take the job out of its sequence (its evaluated cells stay) and end its stream."""
        slot, job.slot = job.slot, None
        if slot is not None:
            slot.job = None
            slot.used_at = time.perf_counter()
        if self._flash is not None and self._flash.job is job:
            self._flash.job, job.flash = None, False
        if job.sampler is not None:
            job.sampler.close()
            job.sampler = None
        if error is not None:
            job.reply.push_threadsafe(Failed(error))
            return
        tail = job.text.flush() if job.text is not None else ""
        self._emit(job.reply, *job.think.feed(tail))
        self._emit(job.reply, *job.think.flush())
        ended = time.perf_counter()
        job.reply.push_threadsafe(
            Done(
                GenerationStats(
                    prompt_tokens=len(job.prompt),
                    evaluated_prompt_tokens=job.evaluated,
                    prefilled_tokens=job.prefilled,
                    completion_tokens=job.produced,
                    ttft_s=(job.first_token_at or ended) - job.started,
                    total_s=ended - job.started,
                    finish_reason=job.finish or "cancelled",
                    restored_state=job.restored,
                    cut_tokens=job.cut,
                )
            )
        )

    def _arm(self, jobs: list[_Job]) -> None:
        """Poll for a cancel inside ``llama_decode`` only in prompt-only steps.

        The callback runs after every graph node and takes the GIL each time: nothing against
        a prompt chunk, but ~10% of generation speed (see LlamaBackend._arm_abort). A step
        with streaming rooms in it is short, and cancels are checked between steps.
        """
        self._abortable = jobs
        if bool(jobs) != self._armed:
            self._armed = bool(jobs)
            callback = self._abort_callback if jobs else self._no_abort_callback
            llama_cpp.llama_set_abort_callback(self.ctx, callback, None)

    def _should_abort(self, _data: Any) -> bool:
        """Called by llama.cpp between graph nodes: give up a prompt step nobody waits for."""
        jobs = self._abortable
        return bool(jobs) and all(job.reply.cancelled for job in jobs)

    _emit = staticmethod(push_split)

    def close(self) -> None:
        """Free the batch and the context; must run before the model itself is freed."""
        llama_cpp.llama_batch_free(self._batch)
        self._context.close()
