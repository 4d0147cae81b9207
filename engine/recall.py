"""Recall at each turn: old lines of this room that the newest message asks about.

The newest user message queries two indexes of the room: full text (``memory.recall_index``)
and message embeddings (``memory.vector_index``, made by ``engine.embedder``). Each list keeps
only hits past its own relevance threshold (a prompt without recall is cheaper than one with
noise: every recalled token is evaluated on every turn that has it), and what is left is ranked
together by reciprocal rank fusion. Hits still in the prompt's recent turns are skipped, and the
rest are fitted into ``memory.recall_tokens`` as dated lines with speakers. The block goes into
the volatile tail of the prompt, after the cached prefix, so recall never invalidates the
evaluated summary and persona.

Stored messages are embedded by a background task in small batches, between replies (or every
``QUIET_WAIT_S`` under constant load); a turn's own question is embedded by a second worker, so
it never waits behind indexing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from engine.context import defuse_markup
from engine.embedder import Embedder, resolve_embedding_model
from engine.settings import MemorySettings
from errors import HearthError, StorageError
from memory import MemoryStore, SearchHit, StoredMessage
from memory.recall_index import query_terms
from memory.vector_index import CHUNK_CHARS, EXCERPT_CHARS, VectorIndex, chunks, excerpt

log = logging.getLogger(__name__)

RECALL_HEADER = "Earlier in this conversation:"
MIN_SCORE = 0.5  # share of the query's uncommon words a line must hold to be recalled
# all-MiniLM-L6-v2: a question paraphrasing a fact scores 0.3-0.7 against it (median 0.47 in bench.recall),
# unrelated lines mostly under 0.3. Lines that merely share a sentence shape score 0.6-0.8 too, so vectors
# are asked only when the newest message asks something (``asks``): small talk recalls nothing by shape.
MIN_COSINE = 0.3
RRF_K = 60  # reciprocal rank fusion's usual constant: later ranks still count, the first few most
CANDIDATES = 8
INDEX_BATCH = 8  # messages embedded per step of the background indexer (about 30 ms on one core)
IDLE_POLL_S = 5.0  # the indexer looks for new messages this often when nobody asks
# While replies are generating, the indexer waits up to this long for them to end before each
# batch: ~30 ms of one core per 2 s under constant load, and up to 240 messages a minute indexed.
QUIET_WAIT_S = 2.0
Mode = Literal["fulltext", "vector", "hybrid"]
_ASKING = re.compile(
    r"\?|^\W*(who|whom|whose|what|when|where|which|why|how|do|does|did|is|are|was|were|can|could|would|will)\b"
    r"|\b(remind me|remember|recall)\b",
    re.IGNORECASE,
)


def asks(text: str) -> bool:
    """True when ``text`` asks something: a question mark, a leading question word, or "remind me"."""
    return bool(_ASKING.search(text))
QUERY_CHARS = 2_000
LINE_CHARS = EXCERPT_CHARS + 2  # a long message's excerpt and its two cut marks


def recall_query(stored: Sequence[StoredMessage]) -> str:
    """The newest user message, alone: joining several would dilute each one's words below the
    relevance threshold. Its end, when long (where the question usually is)."""
    for message in reversed(stored):
        if message.role == "user":
            return message.text[-QUERY_CHARS:]
    return ""


class Recall:
    """A room's recall: the indexes it reads, the embedders that feed them, and the indexer task.

    ``start`` loads the embedder (a bad ``memory.embedding_model`` fails there, in one line);
    used without it, the first recall starts it and falls back to full text if it cannot.
    """

    def __init__(
        self,
        store: MemoryStore,
        settings: MemorySettings | None = None,
        models_dir: Path = Path("models"),
        quiet: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        # Resolves when no reply is generating (``Scheduler.wait_running_turn``): indexing runs
        # then, rather than beside generation at a low thread priority (see ``_index_forever``).
        self.quiet = quiet
        self.settings = settings or MemorySettings(embedding_model="off")
        self.tokens = self.settings.recall_tokens
        self.models_dir = models_dir
        self.mode: Mode = "hybrid"
        self.vectors = VectorIndex(store)
        self.query_embedder: Embedder | None = None  # a waiting turn's question
        self.index_embedder: Embedder | None = None  # stored messages, between replies
        self._started = False
        self._indexer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def model(self) -> str:
        """The name vectors are stored under; '' when vectors are off."""
        return self.query_embedder.name if self.query_embedder else ""

    async def start(self) -> None:
        """Load the embedder, drop vectors of any other model (the index is rebuilt), start indexing."""
        if self._started:
            return
        self._started = True
        path = resolve_embedding_model(self.settings.embedding_model, self.models_dir)
        if path is None:
            return
        query, index = Embedder(path), Embedder(path, background=True)
        try:
            await query.load()
            await index.load()
        except BaseException:
            await query.close()
            await index.close()
            raise
        self.query_embedder, self.index_embedder = query, index
        removed = await self.vectors.drop_other_models(self.model)
        if removed:
            log.info("recall: %d vectors of another embedding model removed; re-indexing with %s", removed, self.model)
        self._indexer = asyncio.create_task(self._index_forever(), name="hearth-recall-index")

    async def _ensure_started(self) -> None:
        if self._started:
            return
        try:
            await self.start()
        except HearthError as exc:
            log.warning("recall: vectors off, full text only: %s", exc)

    async def close(self) -> None:
        task, self._indexer = self._indexer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for embedder in (self.query_embedder, self.index_embedder):
            if embedder is not None:
                await embedder.close()
        self.query_embedder = self.index_embedder = None

    # -- indexing ------------------------------------------------------------------------

    async def index_pending(self, limit: int = INDEX_BATCH, *, waited_for: bool = False) -> int:
        """Embed and store up to ``limit`` messages that have no vector yet; how many were done.

        ``waited_for``: someone waits for it, so it runs at normal priority (the query embedder).
        """
        embedder = self.query_embedder if waited_for else self.index_embedder
        if embedder is None:
            return 0
        pending = await self.vectors.unindexed(embedder.name, limit)
        if not pending:
            return 0
        pieces = [
            (mid, number, start, piece)
            for mid, _, text in pending
            for number, (start, piece) in enumerate(chunks(text))
        ]
        vectors = await embedder.embed([piece for _, _, _, piece in pieces])
        rows = [(mid, number, start, vector) for (mid, number, start, _), vector in zip(pieces, vectors, strict=True)]
        await self.vectors.save_chunks(embedder.name, rows)  # a long message's chunks: one transaction
        return len(pending)

    async def index_all(self) -> int:
        """Index everything stored now (tests, benchmarks, and a rebuild someone waits for)."""
        await self._ensure_started()
        done = 0
        while count := await self.index_pending(64, waited_for=True):
            done += count
        return done

    async def _index_forever(self) -> None:
        """Index new messages in small batches, each once the model is quiet (or ``QUIET_WAIT_S`` passed).

        Why not a thread at nice 19 beside generation, as before: it held the GIL whenever it
        ran Python code, and two llama.cpp threads spinning at nice 0 then kept it off the CPU
        for up to 270 ms, stalling the event loop and every other thread (bench.burst).
        """
        while True:
            if self.quiet is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(QUIET_WAIT_S):
                        await self.quiet()
            try:
                done = await self.index_pending()
            except StorageError as exc:
                log.warning("recall: indexing paused: %s", exc)
                done = 0
            except HearthError as exc:
                log.warning("recall: indexing stopped: %s", exc)
                return
            if done:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL_S):
                    await self._wake.wait()

    # -- searching -----------------------------------------------------------------------

    async def rooms(self, conversation_id: int) -> list[int]:
        """The conversations ``memory.recall_scope`` lets this one recall from (itself first)."""
        scope = self.settings.recall_scope
        if scope == "room":
            return [conversation_id]
        everything = dict(await self.store.conversations())
        own = everything[conversation_id]
        same = [
            cid
            for cid, key in everything.items()
            if key.platform == own.platform and (scope == "platform" or key.room_id == own.room_id)
        ]
        return [conversation_id, *(cid for cid in same if cid != conversation_id)]

    async def _fulltext(self, rooms: list[int], query: str, limit: int, least: float) -> list[SearchHit]:
        found: list[SearchHit] = []
        for room in rooms:
            hits = await self.store.search(room, query, limit, specific=least > 0)
            found.extend(hit for hit in hits if hit.score >= least)
        best = sorted(found, key=lambda hit: -hit.score)[:limit]
        terms = query_terms(query)
        return [replace(hit, text=matching_part(hit.text, terms)) for hit in best]

    async def _nearest(self, rooms: list[int], query: str, limit: int) -> list[SearchHit]:
        embedder = self.query_embedder
        if embedder is None:
            return []

        async def question() -> np.ndarray:
            return (await embedder.embed([query]))[0]

        nearest = await self.vectors.nearest(rooms, embedder.name, question(), limit)
        hits = await self.vectors.messages([near for near in nearest if near.score >= MIN_COSINE])
        return sorted(hits, key=lambda hit: -hit.score)

    async def search(
        self, conversation_id: int, query: str, limit: int, skip: frozenset[int] = frozenset(), *, browse: bool = False
    ) -> list[SearchHit]:
        """This room's (or scope's) hits for ``query`` past their thresholds, fused, best first.

        ``score`` is the fused rank: 1.0 for a line first in both lists, 0.5 for one first in one.
        ``browse`` (``memory search``) keeps full-text hits below the recall threshold too: a person
        looking through memory wants every line holding the word.
        """
        await self._ensure_started()
        self._wake.set()  # whatever was said since the last look gets indexed
        if not any(len(term) >= 3 for term in query_terms(query)):
            return []  # "ok", "lol", "and you?": nothing to look up
        rooms = await self.rooms(conversation_id)
        wanted = limit + len(skip)
        # Both at once: the question is embedded in its own thread while SQLite reads in another, so
        # with a core to spare the full-text half fits in the embedding's time (with one, it costs
        # what it did one after the other).
        searches = []
        try:
            async with asyncio.TaskGroup() as group:
                if self.mode != "vector":
                    least = 0.0 if browse else MIN_SCORE
                    searches.append(group.create_task(self._fulltext(rooms, query, wanted, least)))
                if self.mode != "fulltext" and (browse or asks(query)):
                    searches.append(group.create_task(self._nearest(rooms, query, wanted)))
        except BaseExceptionGroup as failed:  # a StorageError stays one (callers answer it in one line)
            raise failed.exceptions[0] from None
        lists = [search.result() for search in searches]
        fused: dict[int, float] = {}
        by_id: dict[int, SearchHit] = {}
        for ranked in lists:
            for rank, hit in enumerate(hit for hit in ranked if hit.message_id not in skip):
                fused[hit.message_id] = fused.get(hit.message_id, 0.0) + 1.0 / (RRF_K + rank + 1)
                by_id.setdefault(hit.message_id, hit)
        best = 2.0 / (RRF_K + 1)
        order = sorted(fused, key=lambda mid: (-fused[mid], -mid))[:limit]
        return [replace(by_id[mid], score=fused[mid] / best) for mid in order]

    async def hits(self, conversation_id: int, stored: Sequence[StoredMessage]) -> list[SearchHit]:
        """Relevant hits for the newest message that are not among ``stored`` (the turns in view)."""
        query = recall_query(stored)
        if not query or self.tokens <= 0:
            return []
        in_view = frozenset(message.id for message in stored)
        hits = await self.search(conversation_id, query, CANDIDATES, in_view)
        said = " ".join(query.lower().split())
        return [hit for hit in hits if " ".join(hit.text.lower().split()) != said]  # a repeat tells nothing new


def matching_part(text: str, terms: Sequence[str]) -> str:
    """A long message as the part holding the first query word found (a short one whole): the
    recalled line shows that part, not the message's beginning."""
    if len(text) <= EXCERPT_CHARS:
        return text
    lower = text.lower()
    found = [at for term in terms if (at := lower.find(term)) >= 0]
    return excerpt(text, max(min(found, default=0) - CHUNK_CHARS // 2, 0))


def recall_budget(recall_tokens: int, room: int) -> int:
    """Tokens recalled lines may take in a prompt with ``room`` tokens: a small window keeps most
    of its room for the conversation itself."""
    return min(recall_tokens, room // 8)


def recall_line(hit: SearchHit) -> str:
    text = " ".join(hit.text.split())
    if len(text) > LINE_CHARS:
        text = text[: LINE_CHARS - 1] + "…"
    return defuse_markup(f"[{hit.created_at:%Y-%m-%d %H:%M}] {hit.speaker}: {text}")  # users wrote it


def recall_block(hits: Sequence[SearchHit], budget: int, count_tokens: Callable[[str], int]) -> str:
    """The best hits that fit ``budget`` tokens, oldest first, under a header; '' if none fits.

    Blocking (it tokenizes): call it off the event loop.
    """
    if budget <= 0 or not hits:
        return ""
    used = count_tokens(RECALL_HEADER)
    chosen: list[tuple[int, str]] = []
    for hit in hits:  # best first
        line = recall_line(hit)
        cost = count_tokens("\n" + line)
        if used + cost <= budget:
            chosen.append((hit.message_id, line))
            used += cost
    if not chosen:
        return ""
    return "\n".join([RECALL_HEADER, *(line for _, line in sorted(chosen))])


__all__ = ["RECALL_HEADER", "Recall", "recall_block", "recall_budget", "recall_query"]
