"""A model served by an OpenAI-compatible server (llama-server, vLLM, llama_cpp.server, ...).

hearth still renders the prompt itself (the GGUF template of ``tokenizer:``, else the
configured ``chat_format``, else ChatML) and streams it over ``/v1/completions``, so the
template and the prefix order stay hearth's and the server's prefix cache stays warm
(``cache_prompt: true``). A server that only speaks chat gets ``/v1/chat/completions``
with the messages instead. Up to ``max_concurrent`` rooms stream at once; the server
batches them. Counting is ``engine.remote_tokens``.

Failures are translated here, where they enter: a server that is unreachable, slow or
erroring is retried with back-off before the first token; after that, or when retries run
out, the reply fails with a one-line ``ModelError`` the room sees as a notice. ``health``
keeps what the last requests saw, for ``stats`` and ``model info``. Cancelling a reply
cancels its task, which closes the HTTP stream. The API key travels only in a header and
is never part of a message or log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
from httpx_sse import SSEError, aconnect_sse

from engine.backend import GenerationRequest, ModelSpec
from engine.chat_template import ChatMessage, ChatTemplate, choose_format
from engine.gguf_meta import GGUFInfo, read_gguf_info
from engine.reasoning import ThinkFilter
from engine.remote_tokens import Lru, RemoteTokenizer
from engine.reply import Done, Failed, GenerationStats, ReasoningChunk, ReplyStream, TextChunk
from engine.settings import RemoteEndpoint
from errors import HearthError, ModelError

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # back-off before the first token; then the room is told
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # the longest silence between two streamed chunks (a long prompt, a busy box)


class _Refused(ModelError):
    """The server answered and refused (4xx): retrying will not help."""


@dataclass
class EndpointHealth:
    """What the last requests to the server saw; ``stats`` shows it."""

    ok: bool | None = None  # None: not asked yet
    last_error: str = ""
    failures: int = 0  # consecutive
    last_ok_at: float = 0.0

    def succeeded(self) -> None:
        self.ok, self.failures, self.last_ok_at = True, 0, time.monotonic()

    def failed(self, problem: str) -> None:
        self.ok, self.last_error, self.failures = False, problem, self.failures + 1

    def line(self) -> str:
        if self.ok is None:
            return "not asked yet"
        if self.ok:
            return f"ok (last answer {time.monotonic() - self.last_ok_at:.0f} s ago)"
        return f"failing: {self.last_error} ({self.failures} in a row)"


class _RemoteReply(ReplyStream):
    """A reply whose cancel also cancels the task streaming it, which closes the HTTP stream."""

    task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        super().cancel()
        task = self.task
        if task is not None and not task.done():
            self._loop.call_soon_threadsafe(task.cancel)


class RemoteBackend:
    """One model on an OpenAI-compatible server; see the module docstring."""

    can_stream: ClassVar[bool] = True
    kind: ClassVar[str] = "remote"

    def __init__(self, spec: ModelSpec, remote: RemoteEndpoint) -> None:
        self.spec = spec
        self.remote = remote
        self.max_concurrent = remote.max_concurrent
        self.info: GGUFInfo | None = None
        self.template: ChatTemplate | None = None
        self.load_seconds = 0.0
        self.health = EndpointHealth()
        self.server_models: list[str] = []
        self.chat_only = False  # the server has no /completions: send messages to /chat/completions
        self._client: httpx.AsyncClient | None = None
        self._tokens: RemoteTokenizer | None = None
        self._texts: Lru = Lru(256)  # token ids → the text they came from (what is sent)
        self._messages: Lru = Lru(256)  # rendered text → its messages (for chat-only servers)

    @property
    def loaded(self) -> bool:
        return self._client is not None

    @property
    def details(self) -> tuple[str, ...]:
        counting = self._tokens.method if self._tokens else "not loaded"
        served = f" (serves: {', '.join(self.server_models)})" if self.server_models else ""
        return (
            f"endpoint: {self.remote.url}, model {self.remote.model or 'the server default'}{served}",
            f"transport: {'/v1/chat/completions' if self.chat_only else '/v1/completions'}, "
            f"up to {self.max_concurrent} replies at once",
            f"token counts: {counting}",
            f"endpoint health: {self.health.line()}",
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.remote.api_key}"} if self.remote.api_key else {}

    async def load(self) -> None:
        """Ask the server for its models (the reachability check), then set up counting and the template."""
        started = time.perf_counter()
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        pool = self.max_concurrent + 4  # replies, plus counting and health requests
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        client = httpx.AsyncClient(base_url=self.remote.url, headers=self._headers(), timeout=timeout, limits=limits)
        try:
            self.server_models = await self._list_models(client)
            self._tokens = RemoteTokenizer(self.remote.url, self._headers(), self.remote.model, self.remote.tokenizer)
            await self._tokens.start(client)
            self.template = await self._template()
        except BaseException:
            await client.aclose()
            if self._tokens is not None:
                self._tokens.close()
            raise
        self._client = client
        self.load_seconds = time.perf_counter() - started
        log.info("using %s at %s; token counts: %s", self.spec.name, self.remote.url, self._tokens.method)

    async def _list_models(self, client: httpx.AsyncClient) -> list[str]:
        try:
            response = await client.get("/models")
            response.raise_for_status()
            models = [str(m.get("id")) for m in response.json().get("data", []) if isinstance(m, dict)]
        except httpx.HTTPStatusError as exc:
            self.health.failed(f"HTTP {exc.response.status_code}")
            raise ModelError(f"{self.remote.url} refused: HTTP {exc.response.status_code}") from None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            self.health.failed(_describe(exc))
            raise ModelError(f"{self.remote.url} does not answer: {_describe(exc)}") from None
        self.health.succeeded()
        if self.remote.model and models and self.remote.model not in models:
            raise ModelError(f"{self.remote.url} does not serve {self.remote.model!r}; it serves {', '.join(models)}")
        return models

    async def _template(self) -> ChatTemplate:
        """The tokenizer GGUF's own template when there is one, else the configured or a built-in format."""
        gguf_template, architecture, bos, eos = None, "", "", ""
        if self.remote.tokenizer is not None:
            self.info = await asyncio.to_thread(read_gguf_info, self.remote.tokenizer)
            gguf_template, architecture = self.info.chat_template, self.info.architecture
            vocab = self._tokens.vocab if self._tokens else None
            if vocab is not None:
                bos, eos = _token_text(vocab, vocab.token_bos()), _token_text(vocab, vocab.token_eos())
        name, source = choose_format(architecture, gguf_template, self.spec.options.chat_format)
        return ChatTemplate(source, bos_token=bos, eos_token=eos, name=name)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if self._tokens is not None:
            self._tokens.close()

    # -- prompt side ---------------------------------------------------------------------

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        if self.template is None:
            raise ModelError(f"model {self.spec.name} is not loaded")
        text = self.template.render(messages, add_generation_prompt)
        if add_generation_prompt:
            self._messages.put(text, tuple(messages))
        return text

    def tokenize(self, text: str) -> list[int]:
        if self._tokens is None or self.template is None:
            raise ModelError(f"model {self.spec.name} is not loaded")
        tokens = self._tokens.tokenize(text, add_special=not self.template.renders_bos)
        self._texts.put(tuple(tokens), text)
        return tokens

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.tokenize(self.render(messages)))

    def count_text_tokens(self, text: str) -> int:
        if self._tokens is None:
            raise ModelError(f"model {self.spec.name} is not loaded")
        return len(self._tokens.tokenize(text, add_special=False))

    def invalidate_room(self, room: str) -> None:
        """Nothing to drop: the server keeps (and evicts) its own prefix cache."""

    # -- generation ----------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> ReplyStream:
        """Start streaming on the event loop; the reply fills as chunks arrive."""
        reply = _RemoteReply()
        text = self._texts.find(tuple(request.prompt_tokens))
        if self._client is None or text is None:
            problem = "is not loaded" if self._client is None else "got a prompt it did not tokenize"
            reply.push(Failed(ModelError(f"model {self.spec.name} {problem}")))
            return reply
        reply.task = asyncio.get_running_loop().create_task(self._generate(request, text, reply))
        return reply

    async def _generate(self, request: GenerationRequest, text: str, reply: _RemoteReply) -> None:
        started = time.perf_counter()
        progress = _Progress(started)
        try:
            await self._with_retries(request, text, reply, progress)
        except asyncio.CancelledError:
            progress.finish = "cancelled"
        except HearthError as exc:
            reply.push(Failed(exc))
            return
        except Exception as exc:  # a bug, not the server: logged once, the room gets one line
            log.exception("streaming from %s failed", self.remote.url)
            reply.push(Failed(ModelError(f"generation failed: {exc}", original=exc)))
            return
        progress.flush(reply)
        reply.push(Done(progress.stats(len(request.prompt_tokens))))

    async def _with_retries(
        self, request: GenerationRequest, text: str, reply: _RemoteReply, progress: _Progress
    ) -> None:
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
            try:
                await self._stream_once(request, text, reply, progress)
                self.health.succeeded()
                return
            except _Refused as exc:
                self.health.failed(str(exc))
                raise
            except (httpx.HTTPError, SSEError, ValueError, KeyError) as exc:
                problem = _describe(exc)
                self.health.failed(problem)
                if progress.produced or delay is None:
                    raise ModelError(f"the model server failed: {problem}; your message is kept") from None
                log.warning("%s: %s; retry %d in %.1f s", self.remote.url, problem, attempt + 1, delay)
                await asyncio.sleep(delay)

    async def _stream_once(
        self, request: GenerationRequest, text: str, reply: _RemoteReply, progress: _Progress
    ) -> None:
        assert self._client is not None
        route, body = self._payload(request, text)
        async with aconnect_sse(self._client, "POST", route, json=body) as source:
            response = source.response
            if response.status_code == 404 and not self.chat_only and text in self._messages:
                self.chat_only = True  # no /completions here: speak chat from now on
                log.info("%s has no /completions; using /chat/completions", self.remote.url)
                raise httpx.TransportError("switching to /chat/completions")
            if response.status_code >= 400:
                await response.aread()
                problem = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    raise _Refused(f"the model server refused the request: {problem}")
                raise httpx.HTTPStatusError(problem, request=response.request, response=response)
            async for event in source.aiter_sse():
                if event.data.strip() == "[DONE]":
                    break
                progress.take(event.json(), reply, chat=route.startswith("/chat"))

    def _payload(self, request: GenerationRequest, text: str) -> tuple[str, dict[str, Any]]:
        sampling = request.sampling
        stop = list(dict.fromkeys([*(self.template.stop if self.template else ()), *sampling.stop]))
        max_tokens = max(1, min(sampling.max_tokens, self.spec.options.n_ctx - len(request.prompt_tokens)))
        body: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "min_p": sampling.min_p,
            "repeat_penalty": sampling.repeat_penalty,  # llama.cpp's name
            "repetition_penalty": sampling.repeat_penalty,  # vLLM's
            "stop": stop,
            "stream": True,
            "cache_prompt": True,  # llama-server keeps the prefix; others ignore the key
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if self.remote.model:
            body["model"] = self.remote.model
        if self.chat_only and text in self._messages:
            messages = [{"role": m.role, "content": m.content} for m in self._messages.find(text)]
            return "/chat/completions", body | {"messages": messages}
        return "/completions", body | {"prompt": text}


class _Progress:
    """What one reply has streamed so far; survives a retry before the first token."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_at = 0.0
        self.produced = 0
        self.finish = "stop"
        self.evaluated: int | None = None
        self.think = ThinkFilter()

    def take(self, chunk: dict[str, Any], reply: ReplyStream, *, chat: bool) -> None:
        choices = chunk.get("choices") or [{}]
        choice = choices[0]
        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
        if piece:
            self.first_at = self.first_at or time.perf_counter()
            self.produced += 1
            _emit(reply, *self.think.feed(piece))
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        timings = chunk.get("timings") or {}
        if "prompt_n" in timings:  # llama-server says how much of the prompt it really evaluated
            self.evaluated = int(timings["prompt_n"])

    def flush(self, reply: ReplyStream) -> None:
        _emit(reply, *self.think.flush())

    def stats(self, prompt_tokens: int) -> GenerationStats:
        ended = time.perf_counter()
        return GenerationStats(
            prompt_tokens=prompt_tokens,
            evaluated_prompt_tokens=prompt_tokens if self.evaluated is None else self.evaluated,
            completion_tokens=self.produced,
            ttft_s=(self.first_at or ended) - self.started,
            total_s=ended - self.started,
            finish_reason=self.finish,
        )


def _emit(reply: ReplyStream, visible: str, reasoning: str) -> None:
    if visible:
        reply.push(TextChunk(visible))
    if reasoning:
        reply.push(ReasoningChunk(reasoning))


def _token_text(vocab: Any, token: int) -> str:
    return "" if token < 0 else vocab.detokenize([token], special=True).decode("utf-8", errors="ignore")


def _describe(exc: BaseException) -> str:
    """One short line for a transport failure; never the request (its headers hold the key)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed mid-reply"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


async def probe_endpoint(remote: RemoteEndpoint) -> str:
    """For ``check``: one GET of /models. Returns what the server serves; ModelError if it does not answer."""
    backend = RemoteBackend(ModelSpec("check", remote.tokenizer or Path()), remote)
    headers = backend._headers()
    timeout = httpx.Timeout(10.0, connect=CONNECT_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=remote.url, headers=headers, timeout=timeout) as client:
        models = await backend._list_models(client)
    return f"{remote.url} answers; serves {', '.join(models) or 'no model list'}"
