"""Evaluate cold prompts with flash attention, then hand the KV cells to the plain context.

On a CPU, llama.cpp's flash-attention path evaluates a long prompt about 20% faster than
the plain one, but a warm turn's short batch against a long cache 1.7× slower (README
"Performance"). A context has one layout for life, so a model gets two: the plain one,
which serves warm turns and generates, and this second context on the same weights (only
its KV cache and working buffers are extra), which evaluates long cold prompts. Its
sequence state is rewritten to the plain layout (``engine.kv_layout``) and loaded into
the plain context, which then evaluates only the prompt's last token.

Worker thread only, like everything that touches llama objects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import llama_cpp
from llama_cpp import _internals

from engine.kv_layout import transpose_values
from engine.seq_state import read_sequence_state
from engine.state_cache import common_prefix

log = logging.getLogger(__name__)


class FlashPrefill:
    """A flash-attention context on a loaded model's weights, used only to evaluate prompts."""

    def __init__(
        self,
        llm: Any,
        abort_callback: Any,
        n_ctx: int | None = None,
        n_batch: int | None = None,
        n_ubatch: int | None = None,
    ) -> None:
        plain = llm.context_params
        # Everything as the plain context has it (sizes, threads, KV types, RoPE), so the
        # cells mean the same in both; only the attention kernel differs. ``n_ctx``: the
        # batched path's per-sequence size (its Llama's own context only tokenizes).
        params = llama_cpp.llama_context_params.from_buffer_copy(plain)
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if n_ctx is not None:
            params.n_ctx = n_ctx
        if n_batch is not None:  # the batched path's sizes, not its tokenizer context's
            params.n_batch, params.n_ubatch = n_batch, n_ubatch or n_batch
        params.no_perf = True
        self._n_batch = int(params.n_batch)
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=self._n_batch, embd=0, n_seq_max=1, verbose=False)
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._tokens: list[int] = []  # what this context's KV cache holds now
        self.last_evaluated = 0  # tokens the last evaluate() decoded, for the generation stats
        # The owner's callback object: it outlives this context, which holds only its pointer.
        llama_cpp.llama_set_abort_callback(self._ctx.ctx, abort_callback, None)
        self.usable = True

    def worth_it(self, tokens: Sequence[int], reused: int, min_tokens: int) -> bool:
        """Whether to prefill ``tokens`` here, when the plain context holds ``reused`` of them:
        a long new stretch, at least as long as the cache it attends back to.

        Measured on 2 cores: from an empty cache, flash attention plus the handover wins
        from 64 tokens up (6% there, 14% at 512); a short batch against a long cache is
        1.7x slower with it. This context may redo a little more than the plain one (it
        holds the last cold prompt, not this room's latest turns), since it is faster.
        """
        pending = len(tokens) - 1 - reused
        if not self.usable or pending < min_tokens:
            return False
        flash_pending = self.pending(tokens[:-1])
        return flash_pending <= pending * 1.1 and flash_pending >= len(tokens) - 1 - flash_pending

    def pending(self, tokens: Sequence[int]) -> int:
        """How many of ``tokens`` this context would still have to evaluate."""
        return len(tokens) - common_prefix(self._tokens, list(tokens))

    def evaluate(self, tokens: Sequence[int]) -> bytes | None:
        """The plain-layout sequence state of ``tokens``, or None if cancelled or not convertible.

        A cancel (the abort callback) leaves the cells evaluated before it, so a retry of
        the same prompt resumes there.
        """
        self.last_evaluated = 0
        if self.advance(tokens) is None:
            return None
        return self.handover()

    def advance(self, tokens: Sequence[int], limit: int | None = None) -> int | None:
        """Evaluate up to ``limit`` more of ``tokens`` (all of them by default), after what this
        context holds already; how many it evaluated, or None if the abort callback stopped it.

        The batched path calls this once per step, so rooms joining meanwhile wait one chunk.
        """
        tokens = list(tokens)
        done = common_prefix(self._tokens, tokens)
        if done < len(self._tokens):
            llama_cpp.llama_memory_seq_rm(self._memory, -1, done, -1)
            self._tokens = tokens[:done]
        end = len(tokens) if limit is None else min(len(tokens), done + limit)
        evaluated = 0
        try:
            while done < end:
                chunk = tokens[done : min(done + self._n_batch, end)]
                self._batch.set_batch(chunk, n_past=done, logits_all=False)
                self._ctx.decode(self._batch)
                done += len(chunk)
                evaluated += len(chunk)
                self.last_evaluated += len(chunk)
                self._tokens = tokens[:done]
        except RuntimeError:  # the abort callback: a cancel
            # Ubatches of an aborted batch may be in the cache: trim to what is recorded.
            llama_cpp.llama_memory_seq_rm(self._memory, -1, len(self._tokens), -1)
            return None
        return evaluated

    def handover(self, streams: int = 1) -> bytes | None:
        """What this context holds, as a plain-layout state for a context of ``streams`` KV
        streams; None (and never again) if the layout can't be converted."""
        state = transpose_values(read_sequence_state(self._ctx.ctx), streams)
        if state is None:
            log.warning("this model's KV state has a layout hearth can't convert; prompts are evaluated plainly")
            self.usable = False
        return state

    def close(self) -> None:
        """Free the context and batch; must run before the model itself is freed."""
        self._batch.close()
        self._ctx.close()
        self._tokens = []
        self.usable = False
