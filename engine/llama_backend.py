"""The in-process llama-cpp-python backend.

Every call that touches the llama objects runs on this backend's one worker thread,
because llama-cpp objects are not thread-safe and generation must never block the
event loop. Tokens flow back to the loop through a ReplyStream. llama-cpp failures are
translated into ModelError right here, where they enter.

A long cold prompt is evaluated in a second, flash-attention context on the same weights
and its KV cells handed to the plain one (``engine.flash_prefill``): each layout is faster
at one of the two jobs.

Cancelling a reply stops it within a fraction of a second, even in the middle of a long
prompt evaluation: while the prompt is evaluated, an abort callback on the llama context,
polled by the CPU backend between graph nodes, makes ``llama_decode`` give up once the
current reply is cancelled. Between generated tokens the generation loop checks itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import llama_cpp

from engine.backend import GenerationRequest, ModelSpec
from engine.batch_decoder import BatchDecoder
from engine.chat_template import ChatMessage, ChatTemplate, choose_format
from engine.flash_prefill import FlashPrefill
from engine.gguf_meta import GGUFInfo, read_gguf_info
from engine.llama_log import route_llama_logs
from engine.reasoning import ThinkFilter
from engine.reply import Done, Failed, GenerationStats, ReplyStream, push_split
from engine.seq_state import cut_cells, read_sequence_state, write_sequence_state
from engine.settings import BATCHED_TOKENIZER_CTX
from engine.state_cache import RoomState, StateCache, common_prefix, model_identity, same_room
from engine.volatile_span import VolatileSpans
from errors import HearthError, ModelError

log = logging.getLogger(__name__)
route_llama_logs()


def _return_freed_memory() -> None:
    """Ask glibc to hand freed model buffers back to the OS.

    Without it, RSS grows with every model swap: glibc keeps the freed KV and compute
    buffers in its arenas for reuse. Not glibc (macOS, musl)? Then there is nothing to do.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class LlamaBackend:
    """One loaded GGUF model and the one thread that drives it."""

    can_stream: ClassVar[bool] = True
    kind: ClassVar[str] = "local"
    details: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.info: GGUFInfo | None = None
        self.template: ChatTemplate | None = None
        self.load_seconds: float = 0.0
        self._llm: Any = None
        self._prefill: FlashPrefill | None = None  # evaluates long cold prompts (worker thread)
        # ``model.parallel`` > 1: rooms generate at once in one multi-sequence context.
        self._decoder: BatchDecoder | None = None
        self.max_concurrent: int = max(1, spec.options.parallel)  # the scheduler admits this many turns
        self.banned_tokens: tuple[int, ...] = ()  # no reply may choose these (the benchmark bans EOS)
        self._executor: ThreadPoolExecutor | None = None
        # Tokenizing happens on the caller's thread (the vocab is read-only after load);
        # this lock only keeps it from racing a close() that frees the vocab.
        self._lifecycle = threading.Lock()
        self.states: StateCache | None = None
        self._resident: str | None = None  # whose evaluated prefix sits in llama's KV cache now
        self.spans = VolatileSpans()  # each room's last volatile block, cut out at its next turn
        self._current: ReplyStream | None = None  # the reply being generated; the abort callback reads it
        # Kept on the instance: llama.cpp holds only the C pointer, so a collected ctypes
        # callback would crash the next decode.
        self._abort_callback = llama_cpp.ggml_abort_callback(self._should_abort)
        self._no_abort_callback = llama_cpp.ggml_abort_callback()  # NULL: llama.cpp skips the check

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    async def load(self) -> None:
        """Validate the file, then build the Llama object on the worker thread."""
        started = time.perf_counter()
        self.info = await asyncio.to_thread(read_gguf_info, self.spec.path)
        identity = await asyncio.to_thread(model_identity, self.spec.path)
        # A state's KV layout depends on flash attention (V is transposed without it), and on the
        # context's KV streams: llama.cpp refuses a state saved with another ``model.parallel``.
        options = self.spec.options
        identity += "-fa" if options.flash_attn else ""
        identity += f"-seq{options.parallel}" if options.parallel > 1 else ""
        self.states = StateCache(
            options.state_cache_mb * 2**20, identity, options.state_cache_dir, options.state_cache_disk_mb * 2**20
        )
        fmt, source = choose_format(self.info.architecture, self.info.chat_template, options.chat_format)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.spec.name}")
        try:
            self._llm = await self._run(self._construct)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self.template = ChatTemplate(
            source,
            bos_token=self._token_text(self._llm.token_bos()),
            eos_token=self._token_text(self._llm.token_eos()),
            name=fmt,
        )
        if self._decoder is not None:
            self._decoder.template_stop = list(self.template.stop)
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s (%s) in %.2fs", self.spec.name, self.spec.path.name, self.load_seconds)

    def _construct(self) -> Any:
        from llama_cpp import Llama

        spec, options = self.spec, self.spec.options
        # llama-cpp-python defaults to half the cores; prompt evaluation on a small CPU
        # wants all of them (measured: ~25% faster TTFT on 2 cores).
        threads = options.n_threads or os.cpu_count() or 1
        batched = options.parallel > 1
        try:
            llm = Llama(
                model_path=str(spec.path),
                # Batched, this context only tokenizes: the BatchDecoder's holds the rooms.
                n_ctx=BATCHED_TOKENIZER_CTX if batched else options.n_ctx,
                n_threads=threads,
                n_threads_batch=options.n_threads_batch or threads,
                n_batch=options.n_batch,
                n_ubatch=options.n_ubatch,
                n_gpu_layers=options.n_gpu_layers,
                flash_attn=options.flash_attn,
                last_n_tokens_size=64,
                verbose=False,
            )
        except Exception as exc:
            raise ModelError(f"llama.cpp could not load {spec.path.name}: {exc}", original=exc) from exc
        if batched:
            try:
                self._decoder = BatchDecoder(
                    llm,
                    options.parallel,
                    options.n_ctx,
                    self.states,
                    spans=self.spans,
                    n_batch=options.n_batch,
                    n_ubatch=options.n_ubatch,
                )
            except ValueError as exc:
                llm.close()
                raise ModelError(f"llama.cpp could not make {options.parallel} sequences: {exc}", original=exc) from exc
            if options.flash_prefill and not options.flash_attn:
                try:  # closed with the others in ``_free``
                    self._prefill = self._decoder.use_flash_prefill(llm, options.flash_prefill_min_tokens)
                except ValueError as exc:
                    log.warning("no flash-attention prefill for %s: %s", spec.name, exc)
            return llm
        llama_cpp.llama_set_abort_callback(llm._ctx.ctx, self._abort_callback, None)
        if options.flash_prefill and not options.flash_attn:
            try:
                self._prefill = FlashPrefill(llm, self._abort_callback)
            except ValueError as exc:  # llama.cpp could not make the second context: go without
                log.warning("no flash-attention prefill for %s: %s", spec.name, exc)
        return llm

    def _arm_abort(self, armed: bool) -> None:
        """Poll for a cancel inside ``llama_decode`` only while that is worth it (worker thread).

        llama.cpp calls the callback after every graph node (~600 times per SmolLM2 decode),
        and each call takes the GIL. That is nothing against a prompt evaluation of seconds,
        but it cost ~10% of generation speed (measured); between generated tokens the loop
        checks ``cancelled`` itself.
        """
        callback = self._abort_callback if armed else self._no_abort_callback
        llama_cpp.llama_set_abort_callback(self._llm._ctx.ctx, callback, None)

    def _should_abort(self, _data: Any) -> bool:
        """Called by llama.cpp between graph nodes (on the worker thread): stop a cancelled reply."""
        reply = self._current
        return reply is not None and reply.cancelled

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            raise ModelError(f"model {self.spec.name} is not loaded")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Free the model on its own thread, then stop the thread."""
        if self._executor is None:
            return
        executor, self._executor = self._executor, None
        await asyncio.get_running_loop().run_in_executor(executor, self._free)
        executor.shutdown(wait=True)

    def _free(self) -> None:
        if self._llm is not None and self.states is not None:
            if self._decoder is not None:
                self._decoder.park_all()
            self._park_resident()
            self.states.flush()
        with self._lifecycle:
            llm, self._llm = self._llm, None
            decoder, self._decoder = self._decoder, None
            if decoder is not None:
                decoder.close()  # before the weights it shares
            prefill, self._prefill = self._prefill, None
            if prefill is not None:
                prefill.close()  # before the weights it shares
            if llm is not None:
                llm.close()
        _return_freed_memory()

    # -- prompt side ---------------------------------------------------------------------

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        if self.template is None:
            raise ModelError(f"model {self.spec.name} is not loaded")
        return self.template.render(messages, add_generation_prompt)

    def tokenize(self, text: str) -> list[int]:
        with self._lifecycle:
            if self._llm is None or self.template is None:
                raise ModelError(f"model {self.spec.name} is not loaded")
            add_bos = not self.template.renders_bos
            return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.tokenize(self.render(messages)))

    def count_text_tokens(self, text: str) -> int:
        """Tokens of a bare text (lore entries, summaries), without BOS or template."""
        with self._lifecycle:
            if self._llm is None:
                raise ModelError(f"model {self.spec.name} is not loaded")
            return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # -- generation ----------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> ReplyStream:
        """Start generating on the worker thread; the stream fills as tokens arrive."""
        reply = ReplyStream()
        if self._executor is None:
            reply.push(Failed(ModelError(f"model {self.spec.name} is not loaded")))
            return reply
        decoder = self._decoder
        if decoder is not None:
            decoder.banned = self.banned_tokens
            decoder.submit(request, reply, lambda: self._start_batch(decoder))
            return reply
        self._executor.submit(self._generate, request, reply)
        return reply

    def _start_batch(self, decoder: BatchDecoder) -> None:
        """Run the batched decode loop on the worker thread (it returns when no turn is left)."""
        executor = self._executor
        if executor is not None:
            executor.submit(decoder.run)

    @property
    def generating(self) -> int:
        """Rooms generating right now (``stats``): up to ``max_concurrent``."""
        if self._decoder is not None:
            return self._decoder.generating
        return int(self._current is not None)

    def _generate(self, request: GenerationRequest, reply: ReplyStream) -> None:
        self._current = reply
        try:
            stats = self._generate_tokens(request, reply)
        except HearthError as exc:
            reply.push_threadsafe(Failed(exc))
        except Exception as exc:
            log.exception("generation failed on %s", self.spec.name)
            reply.push_threadsafe(Failed(ModelError(f"generation failed: {exc}", original=exc)))
        else:
            reply.push_threadsafe(Done(stats))
        finally:
            self._current = None

    def _generate_tokens(self, request: GenerationRequest, reply: ReplyStream) -> GenerationStats:
        llm = self._llm
        if llm is None:
            raise ModelError(f"model {self.spec.name} was unloaded")
        tokens = list(request.prompt_tokens)
        n_ctx = self.spec.options.n_ctx
        if len(tokens) + 1 > n_ctx:
            raise ModelError(f"prompt of {len(tokens)} tokens does not fit n_ctx {n_ctx}")
        started = time.perf_counter()  # TTFT includes parking and restoring room states
        restored = self._switch_room(request.room_key, tokens)
        cut = self._cut_last_volatile(request.room_key, tokens)
        self.spans.record(request.room_key, tokens, request.volatile_span)
        reused = min(common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens), len(tokens) - 1)
        evaluated, prefilled = self._prefill_if_worth_it(tokens, reused, reply)
        if reply.cancelled:  # before the turn started, or during the flash-attention prefill
            waited = time.perf_counter() - started
            return GenerationStats(
                prompt_tokens=len(tokens),
                evaluated_prompt_tokens=prefilled,
                ttft_s=waited,
                total_s=waited,
                finish_reason="cancelled",
                restored_state=restored,
                prefilled_tokens=prefilled,
                cut_tokens=cut,
            )
        sampling = request.sampling
        max_tokens = min(sampling.max_tokens, n_ctx - len(tokens))
        stop = list(dict.fromkeys([*self.template.stop, *sampling.stop])) if self.template else []
        first_token_at = 0.0
        produced = 0
        finish = "stop"
        think = ThinkFilter()
        chunks = llm.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            stop=stop,
            seed=sampling.seed,
            stream=True,
            logits_processor=self._ban_processor() if self.banned_tokens else None,
        )
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                if not first_token_at:
                    first_token_at = time.perf_counter()
                    self._arm_abort(False)  # the prompt is in; tokens now come one short decode each
                produced += 1
                self._emit(reply, *think.feed(choice["text"]))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if reply.cancelled:
                    finish = "cancelled"
                    break
        except RuntimeError:  # llama_decode returned 2: the abort callback saw the cancel
            if not reply.cancelled:
                raise
            finish = "cancelled"
            evaluated = max(min(llm.n_tokens, len(tokens)) - reused, 0)
            self._drop_aborted_cells()
        finally:
            chunks.close()
            self._arm_abort(True)
        self._emit(reply, *think.flush())
        ended = time.perf_counter()
        return GenerationStats(
            prompt_tokens=len(tokens),
            evaluated_prompt_tokens=evaluated,
            completion_tokens=produced,
            ttft_s=(first_token_at or ended) - started,
            total_s=ended - started,
            finish_reason=finish,
            restored_state=restored,
            prefilled_tokens=prefilled,
            cut_tokens=cut,
        )

    def _ban_processor(self) -> Any:
        """A logits processor that rules out ``banned_tokens`` (the benchmark's fixed-length replies)."""
        banned = list(self.banned_tokens)

        def ban(_ids: Any, scores: Any) -> Any:
            scores[banned] = -float("inf")
            return scores

        return llama_cpp.LogitsProcessorList([ban])

    def _worth_prefilling(self, tokens: list[int], reused: int) -> bool:
        prefill = self._prefill
        return prefill is not None and prefill.worth_it(tokens, reused, self.spec.options.flash_prefill_min_tokens)

    def _prefill_if_worth_it(self, tokens: list[int], reused: int, reply: ReplyStream) -> tuple[int, int]:
        """Evaluate all but the last prompt token with flash attention, and load the cells here.

        Generation then evaluates just the last token in the plain context, which gives the
        logits to sample from. On a cancel or an unconvertible state nothing is loaded, and
        the plain path does the work. Returns the prompt tokens evaluated for this turn, and
        how many of them the flash-attention context evaluated.
        """
        plain = len(tokens) - reused
        if not self._worth_prefilling(tokens, reused):
            return plain, 0
        assert self._prefill is not None
        state = self._prefill.evaluate(tokens[:-1])
        prefilled = self._prefill.last_evaluated
        if state is not None and self._restore(RoomState(tuple(tokens[:-1]), state)):
            return prefilled + 1, prefilled
        if state is not None:
            self._prefill.usable = False  # llama.cpp refused a converted state; it would again
        return (prefilled, prefilled) if reply.cancelled else (plain, 0)

    def _drop_aborted_cells(self) -> None:
        """Make the KV cache match ``input_ids[:n_tokens]`` again after an aborted decode.

        llama-cpp-python counts only whole batches in ``n_tokens``, but an aborted batch of
        several ubatches leaves the finished ones in the cache. Trim past ``n_tokens`` so the
        evaluated prefix stays reusable and a parked room state holds exactly its tokens;
        if the cache still disagrees, start from an empty one.
        """
        llm = self._llm
        llm._requires_eval = True  # the logits may belong to the aborted batch
        memory = llama_cpp.llama_get_memory(llm._ctx.ctx)
        trimmed = llama_cpp.llama_memory_seq_rm(memory, -1, llm.n_tokens, -1)
        if trimmed and llama_cpp.llama_memory_seq_pos_max(memory, 0) == llm.n_tokens - 1:
            return
        log.warning("the KV cache was inconsistent after a cancel; clearing it")
        llama_cpp.llama_memory_clear(memory, True)
        llm.n_tokens = 0
        self._resident = None

    # -- per-room states (worker thread only) -------------------------------------------

    def _cut_last_volatile(self, room: str | None, tokens: list[int]) -> int:
        """Take last turn's volatile block out of the cells when that lets ``tokens`` reuse
        what followed it (``engine.volatile_span``); how many cells went."""
        llm = self._llm
        drop = self.spans.plan(room, llm.input_ids[: llm.n_tokens].tolist(), tokens)
        if drop is None or not cut_cells(llama_cpp.llama_get_memory(llm._ctx.ctx), drop.start, drop.end):
            return 0
        llm.input_ids[: len(drop.kept)] = drop.kept
        llm.n_tokens = len(drop.kept)
        llm._requires_eval = True  # the logits belong to the cut sequence's last token
        return drop.size

    def _switch_room(self, room: str | None, tokens: list[int]) -> bool:
        """Park the resident room's state and bring ``room``'s back if it helps. True if restored."""
        if room == self._resident or self.states is None:
            return False
        self._park_resident()
        self._resident = room
        if room is None:
            return False
        state = self.states.get(room)
        if state is None:
            return False
        llm = self._llm
        current = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        if common_prefix(state.tokens, tokens) <= current:
            return False
        return self._restore(state)

    def _park_resident(self) -> None:
        """Save the resident room's used KV cells (sequence 0 only) into the cache."""
        llm, room = self._llm, self._resident
        if room is None or self.states is None or llm is None or llm.n_tokens == 0:
            return
        previous = self.states.peek(room)  # restored at the start of the turn: its buffer is free
        data = read_sequence_state(llm._ctx.ctx, reuse=previous.data if previous else None)
        if data:
            tokens = tuple(int(t) for t in llm.input_ids[: llm.n_tokens])
            self.states.put(room, RoomState(tokens, data))
        else:
            self.states.discard_ram(room)  # its buffer may be half overwritten

    def _restore(self, state: RoomState) -> bool:
        llm = self._llm
        ctx = llm._ctx.ctx
        # Metadata only: zeroing the whole KV buffer took 10 ms, and empty cells are masked anyway.
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), False)
        llm.n_tokens = 0
        if not write_sequence_state(ctx, state.data):
            log.warning("could not restore a room state; evaluating from scratch")
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            return False
        llm.input_ids[: len(state.tokens)] = state.tokens
        llm.n_tokens = len(state.tokens)
        llm._requires_eval = True  # the logits are the previous room's: never sample from them
        return True

    def invalidate_room(self, room: str) -> None:
        """Drop every evaluated state of a room and its cast: saved, resident, and its volatile
        spans. Its summary changed, so its prefix did too, or it lost messages, and cells
        computed after them must not keep them in view (nor be parked to disk later).

        Batched, it waits only for the current decode step, not for the batch to empty.
        """
        executor = self._executor
        if executor is None:
            return
        decoder = self._decoder
        if decoder is not None:
            decoder.invalidate(room, lambda: self._start_batch(decoder))
        else:
            executor.submit(self._invalidate, room)

    def _invalidate(self, room: str) -> None:
        self.spans.forget(room)
        if self.states is not None:
            self.states.invalidate(room)
        llm, resident = self._llm, self._resident
        if llm is not None and resident is not None and same_room(resident, room):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), False)
            llm.n_tokens = 0
            self._resident = None

    _emit = staticmethod(push_split)
