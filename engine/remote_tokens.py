"""Token counts for a model that runs on a server: exact where possible, labelled where not.

Three ways, best first (``model info`` names the one in use):

1. a local vocab-only GGUF (``tokenizer:``): llama.cpp's tokenizer without weights,
   exact and local, so every call is synchronous and cheap;
2. the server's tokenize endpoint (llama-server and vLLM ``/tokenize``,
   ``llama_cpp.server`` ``/extras/tokenize``): exact, one HTTP round trip per text;
3. an estimate of ~4 characters a token, labelled as such.

Context assembly counts synchronously (it searches for the largest prompt that fits),
and the engine runs it off the event loop, so a server round trip there blocks only a
worker thread. A count asked for on the event loop itself never waits on the network:
it is answered from the cache, else estimated while the exact count is fetched in the
background for next time. Results are cached by text, so a stable prompt prefix and the
same lore entries cost one request each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import httpx

from errors import ModelError

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # the labelled estimate: about right for English with a BPE vocabulary
CACHE_SIZE = 2048
# (path, JSON body) per server dialect; the text goes into every key a dialect reads.
TOKENIZE_ROUTES = ("/extras/tokenize", "/tokenize")


class Lru:
    """A small bounded map, the newest entries kept; safe to share between the loop and assembly threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def find(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value


def estimate_tokens(text: str) -> list[int]:
    """Stand-in ids of the estimated length; only their count (and identity) is ever used."""
    count = max(1, -(-len(text) // CHARS_PER_TOKEN)) if text else 0
    return [zlib.crc32(text.encode("utf-8")), *([0] * (count - 1))] if count else []


def server_root(url: str) -> str:
    """``http://host:8080/v1`` → ``http://host:8080``: the tokenize routes sit beside /v1."""
    return url[: -len("/v1")] if url.endswith("/v1") else url


class RemoteTokenizer:
    """Counts for one endpoint; ``method`` says which of the three ways is in use."""

    def __init__(self, url: str, headers: dict[str, str], model: str | None, vocab_path: Path | None) -> None:
        self._root = server_root(url)
        self._headers = headers
        self._model = model
        self._vocab_path = vocab_path
        self._vocab: Any = None
        self._route: str | None = None
        self._cache: Lru = Lru(CACHE_SIZE)
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._warming: set[tuple[str, bool]] = set()

    @property
    def method(self) -> str:
        if self._vocab is not None:
            return f"exact, local tokenizer {self._vocab_path}"
        if self._route is not None:
            return f"exact, the server's {self._route}"
        return f"estimate (~{CHARS_PER_TOKEN} characters a token: no tokenize endpoint and no tokenizer:)"

    @property
    def exact(self) -> bool:
        return self._vocab is not None or self._route is not None

    @property
    def vocab(self) -> Any:
        """The vocab-only llama.cpp model, when ``tokenizer:`` is set (for BOS/EOS and detokenizing)."""
        return self._vocab

    async def start(self, client: httpx.AsyncClient) -> None:
        """Load the local vocabulary, else find the server's tokenize route (async, at load)."""
        self._async = client
        if self._vocab_path is not None:
            self._vocab = await asyncio.to_thread(self._load_vocab, self._vocab_path)
            return
        for route in TOKENIZE_ROUTES:
            try:
                response = await client.post(self._root + route, json=self._body("Hello", False))
                if response.is_success and isinstance(response.json().get("tokens"), list):
                    self._route = route
                    break
            except (httpx.HTTPError, ValueError):
                continue
        if self._route is not None:
            self._sync = httpx.Client(headers=self._headers, timeout=httpx.Timeout(10.0, connect=3.0))
        else:
            log.warning("%s has no tokenize endpoint: prompt budgets are estimates", self._root)

    @staticmethod
    def _load_vocab(path: Path) -> Any:
        from llama_cpp import Llama

        try:
            return Llama(model_path=str(path), vocab_only=True, verbose=False)
        except Exception as exc:
            raise ModelError(f"could not read the tokenizer {path}: {exc}", original=exc) from exc

    def close(self) -> None:
        vocab, self._vocab = self._vocab, None
        if vocab is not None:
            vocab.close()
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    def _body(self, text: str, add_special: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"content": text, "prompt": text, "input": text}
        body |= {"add_special": add_special, "add_special_tokens": add_special}
        if self._model:
            body["model"] = self._model
        return body

    # -- counting ----------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """Exact tokens where possible; see the module docstring for where each answer comes from."""
        if self._vocab is not None:
            return self._vocab.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)
        if self._route is None:
            return estimate_tokens(text)
        key = (text, add_special)
        cached = self._cache.find(key)
        if cached is not None:
            return cached
        if _on_event_loop():
            self._warm(key)
            return estimate_tokens(text)
        tokens = self._fetch(text, add_special)
        self._cache.put(key, tokens)
        return tokens

    def _fetch(self, text: str, add_special: bool) -> list[int]:
        """One blocking request (worker threads only); a failure falls back to the estimate."""
        assert self._sync is not None and self._route is not None
        try:
            response = self._sync.post(self._root + self._route, json=self._body(text, add_special))
            response.raise_for_status()
            return list(response.json()["tokens"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("counting tokens on %s failed (%s); estimating this one", self._root, type(exc).__name__)
            return estimate_tokens(text)

    def _warm(self, key: tuple[str, bool]) -> None:
        """Fetch an exact count in the background, so the next identical question is exact."""
        if key in self._warming or self._async is None or self._route is None:
            return
        self._warming.add(key)
        asyncio.get_running_loop().create_task(self._warm_one(key))

    async def _warm_one(self, key: tuple[str, bool]) -> None:
        assert self._async is not None and self._route is not None
        try:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                response = await self._async.post(self._root + self._route, json=self._body(*key))
                if response.is_success:
                    self._cache.put(key, list(response.json()["tokens"]))
        finally:
            self._warming.discard(key)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
