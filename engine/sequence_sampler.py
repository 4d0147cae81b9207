"""One room's token choice and text assembly inside the batched decode loop.

``Llama.create_completion`` did both for the single path; a batch of rooms needs them per
sequence: a llama.cpp sampler chain built from the room's own SamplingParams (the same
chain order llama-cpp-python uses, so a room samples alike on either path), and a text
assembler that turns token pieces into UTF-8 text and holds back a tail that may be the
start of a stop string. Worker thread only.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

import llama_cpp

from engine.reasoning import partial_tag_suffix
from engine.sampling import SamplingParams

PENALTY_LAST_N = 64  # as LlamaBackend's ``last_n_tokens_size``


class SequenceSampler:
    """A llama.cpp sampler chain for one generation; ``close`` frees it."""

    def __init__(self, sampling: SamplingParams, n_vocab: int, banned: Sequence[int] = ()) -> None:
        params = llama_cpp.llama_sampler_chain_default_params()
        params.no_perf = True
        self._chain = llama_cpp.llama_sampler_chain_init(params)
        if banned:  # the benchmark's fixed-length replies: EOS may not end them
            bias = (llama_cpp.llama_logit_bias * len(banned))(
                *(llama_cpp.llama_logit_bias(token, float("-inf")) for token in banned)
            )
            self._add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(banned), bias))
        self._add(
            llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0)
        )
        seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
        if sampling.temperature == 0.0:
            self._add(llama_cpp.llama_sampler_init_greedy())
        elif sampling.temperature < 0.0:
            self._add(llama_cpp.llama_sampler_init_dist(seed))
        else:
            self._add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            self._add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            self._add(llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            self._add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
            self._add(llama_cpp.llama_sampler_init_dist(seed))

    def _add(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def sample(self, ctx: Any, index: int) -> int:
        """Sample from the logits of batch row ``index`` and remember the token for the penalties."""
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


class TextAssembler:
    """Token pieces in, text out: whole UTF-8 characters only, and never past a stop string."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._pending = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """The text that is safe to show now; sets ``stopped`` when a stop string appeared."""
        self._pending += self._decoder.decode(piece)
        cut = min((i for i in (self._pending.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text, self._pending = self._pending[:cut], ""
            return text
        keep = max((partial_tag_suffix(self._pending, s) for s in self._stop), default=0)
        text = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(text) :]
        return text

    def flush(self) -> str:
        """The end of the reply: a held-back tail that never became a stop string is text."""
        text = "" if self.stopped else self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return text

