"""The in-process llama-cpp-python backend.

Every call that touches the llama objects runs on this backend's one worker thread,
because llama-cpp objects are not thread-safe and generation must never block the
event loop. Tokens flow back to the loop through a ReplyStream. llama-cpp failures are
translated into ModelError right here, where they enter.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage, ChatTemplate, choose_format
from engine.gguf_meta import GGUFInfo, read_gguf_info
from engine.reasoning import ThinkFilter
from engine.reply import Done, Failed, GenerationStats, ReasoningChunk, ReplyStream, TextChunk
from errors import HearthError, ModelError

log = logging.getLogger(__name__)


class LlamaBackend:
    """One loaded GGUF model and the one thread that drives it."""

    can_stream: ClassVar[bool] = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.info: GGUFInfo | None = None
        self.template: ChatTemplate | None = None
        self.load_seconds: float = 0.0
        self._llm: Any = None
        self._executor: ThreadPoolExecutor | None = None
        # Tokenizing happens on the caller's thread (the vocab is read-only after load);
        # this lock only keeps it from racing a close() that frees the vocab.
        self._lifecycle = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    async def load(self) -> None:
        """Validate the file, then build the Llama object on the worker thread."""
        started = time.perf_counter()
        self.info = await asyncio.to_thread(read_gguf_info, self.spec.path)
        fmt, source = choose_format(self.info.architecture, self.info.chat_template, self.spec.chat_format)
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
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s (%s) in %.2fs", self.spec.name, self.spec.path.name, self.load_seconds)

    def _construct(self) -> Any:
        from llama_cpp import Llama

        spec = self.spec
        try:
            return Llama(
                model_path=str(spec.path),
                n_ctx=spec.n_ctx,
                n_threads=spec.n_threads,
                n_threads_batch=spec.n_threads_batch or spec.n_threads,
                n_batch=spec.n_batch,
                n_ubatch=spec.n_ubatch,
                n_gpu_layers=spec.n_gpu_layers,
                flash_attn=spec.flash_attn,
                last_n_tokens_size=64,
                verbose=False,
            )
        except Exception as exc:
            raise ModelError(f"llama.cpp could not load {spec.path.name}: {exc}", original=exc) from exc

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
        with self._lifecycle:
            llm, self._llm = self._llm, None
            if llm is not None:
                llm.close()

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
        self._executor.submit(self._generate, request, reply)
        return reply

    def _generate(self, request: GenerationRequest, reply: ReplyStream) -> None:
        try:
            stats = self._generate_tokens(request, reply)
        except HearthError as exc:
            reply.push_threadsafe(Failed(exc))
        except Exception as exc:
            log.exception("generation failed on %s", self.spec.name)
            reply.push_threadsafe(Failed(ModelError(f"generation failed: {exc}", original=exc)))
        else:
            reply.push_threadsafe(Done(stats))

    def _generate_tokens(self, request: GenerationRequest, reply: ReplyStream) -> GenerationStats:
        llm = self._llm
        if llm is None:
            raise ModelError(f"model {self.spec.name} was unloaded")
        tokens = list(request.prompt_tokens)
        if len(tokens) + 1 > self.spec.n_ctx:
            raise ModelError(f"prompt of {len(tokens)} tokens does not fit n_ctx {self.spec.n_ctx}")
        reused = llm.longest_token_prefix(llm._input_ids[: llm.n_tokens].tolist(), tokens)
        sampling = request.sampling
        max_tokens = min(sampling.max_tokens, self.spec.n_ctx - len(tokens))
        stop = list(dict.fromkeys([*self.template.stop, *sampling.stop])) if self.template else []
        started = time.perf_counter()
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
        )
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                if not first_token_at:
                    first_token_at = time.perf_counter()
                produced += 1
                self._emit(reply, *think.feed(choice["text"]))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if reply.cancelled:
                    finish = "cancelled"
                    break
        finally:
            chunks.close()
        self._emit(reply, *think.flush())
        ended = time.perf_counter()
        return GenerationStats(
            prompt_tokens=len(tokens),
            evaluated_prompt_tokens=len(tokens) - reused,
            completion_tokens=produced,
            ttft_s=(first_token_at or ended) - started,
            total_s=ended - started,
            finish_reason=finish,
        )

    @staticmethod
    def _emit(reply: ReplyStream, visible: str, reasoning: str) -> None:
        if visible:
            reply.push_threadsafe(TextChunk(visible))
        if reasoning:
            reply.push_threadsafe(ReasoningChunk(reasoning))
