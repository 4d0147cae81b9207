"""Message embeddings in the store's own database, and exact cosine search over a room's vectors.

The table (migrations 0005, 0006) holds float32 vectors per message and embedding model: one for a
short message, one per overlapping chunk of a long one (``chunks``), with the chunk's offset so a
hit shows the part that matched (``excerpt``). Rows go with
their message: the foreign key cascades on a hard delete (``memory reset``, ``forget-me``), and an
edit or a soft delete drops the row in the same transaction (``MemoryStore._change``), so a
vector never outlives the text it was made from.

Search is exact cosine in numpy on every backend. ``sqlite-vec`` cannot be loaded here (the
Python build's ``sqlite3`` has no extension loading) and pgvector is not assumed. Reading 10,000
blobs per query would cost more than the search, so each room's matrix is kept in memory and
checked against the table with one cheap ``count``/``max`` query: new rows are appended, and
any deletion (from this process or another) reloads the room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from memory.recall_index import SearchHit
from memory.schema import MessageRow

if TYPE_CHECKING:
    from memory.store import MemoryStore

VECTOR_TABLE = "message_vectors"

_UNINDEXED = text(
    f"""
    SELECT m.id AS id, m.conversation_id AS conversation_id, m.text AS text
    FROM messages AS m LEFT JOIN {VECTOR_TABLE} AS v ON v.message_id = m.id AND v.model = :model AND v.chunk = 0
    WHERE v.message_id IS NULL AND NOT m.deleted AND m.role IN ('user', 'assistant') AND m.text != ''
    ORDER BY m.id DESC
    LIMIT :limit
    """
)
# Only a message that still exists and is not deleted gets a row: it may have gone while it was embedded.
_INSERT = text(
    f"""
    INSERT INTO {VECTOR_TABLE} (message_id, chunk, start, conversation_id, model, vector)
    SELECT id, :chunk, :start, conversation_id, :model, :vector FROM messages WHERE id = :id AND NOT deleted
    ON CONFLICT DO NOTHING
    """
)
_STATE = text(
    f"SELECT count(*), max(message_id) FROM {VECTOR_TABLE} WHERE conversation_id = :conversation_id AND model = :model"
)
_MESSAGES_WITH_VECTORS = text(
    f"SELECT count(*) FROM {VECTOR_TABLE} WHERE conversation_id = :conversation_id AND model = :model AND chunk = 0"
)
_ROWS = text(
    f"""
    SELECT message_id, start, vector FROM {VECTOR_TABLE}
    WHERE conversation_id = :conversation_id AND model = :model AND message_id > :after
    ORDER BY message_id, chunk
    """
)


# A message longer than WHOLE_CHARS (a pasted document) is embedded in overlapping chunks, each its
# own row: the embedder reads 512 tokens at most, and a detail in a long stretch is drowned by the
# rest (a fact in a 400-character window of unrelated text scored under the recall threshold, in a
# 160-character one above it). Up to MAX_CHUNKS chunks: about 200 KB of a message.
WHOLE_CHARS = 1_000
CHUNK_CHARS = 160
CHUNK_OVERLAP = 60
MAX_CHUNKS = 2_048
EXCERPT_CHARS = 400  # how much of a long message a recalled line shows, around the part that matched


def chunks(text: str) -> list[tuple[int, str]]:
    """(start offset, text) of the pieces of ``text`` that get a vector each: itself when short."""
    if len(text) <= WHOLE_CHARS:
        return [(0, text)]
    step = CHUNK_CHARS - CHUNK_OVERLAP
    starts = range(0, max(len(text) - CHUNK_OVERLAP, 1), step)
    return [(start, text[start : start + CHUNK_CHARS]) for start in starts][:MAX_CHUNKS]


def excerpt(text: str, start: int) -> str:
    """``EXCERPT_CHARS`` of ``text`` around the chunk at ``start``, its cuts marked; a short text whole."""
    if len(text) <= EXCERPT_CHARS:
        return text
    begin = max(0, min(start - (EXCERPT_CHARS - CHUNK_CHARS) // 2, len(text) - EXCERPT_CHARS))
    end = begin + EXCERPT_CHARS
    return ("…" if begin else "") + text[begin:end] + ("…" if end < len(text) else "")


def pack(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class Near(NamedTuple):
    """A message close to the query: its best chunk's cosine, and where that chunk starts."""

    message_id: int
    score: float
    start: int = 0


@dataclass
class _RoomMatrix:
    count: int  # rows: chunks, not messages
    last_id: int
    ids: np.ndarray  # each row's message id
    starts: np.ndarray  # each row's offset in its message
    vectors: np.ndarray  # rows are unit length


def _unpack(rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    starts = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.vstack([np.frombuffer(row[2], dtype="<f4") for row in rows]) if rows else None
    return ids, starts, vectors


def _closest(matrices: list[_RoomMatrix], query: np.ndarray, limit: int) -> list[Near]:
    """The ``limit`` messages whose best chunk is closest to ``query``, best first (blocking)."""
    ids = np.concatenate([m.ids for m in matrices])
    starts = np.concatenate([m.starts for m in matrices])
    # numpy's own loop, not BLAS: OpenBLAS would wake a thread per core for this one product and leave
    # them spinning afterwards, taking the cores the query's embedder and SQLite run on (2 ms became
    # 9 ms here, and the embedding beside it 6 ms became 12 ms, on 2 cores).
    scores = np.concatenate([np.einsum("ij,j->i", m.vectors, query) for m in matrices])
    if starts.any():  # some long message has several chunks: keep each message's best row only
        order = np.lexsort((-scores, ids))  # by message, its best chunk first
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = ids[order][1:] != ids[order][:-1]
        rows = order[keep]
        ids, starts, scores = ids[rows], starts[rows], scores[rows]
    if len(scores) > limit:  # the best ``limit`` without sorting the whole room
        best = np.argpartition(-scores, limit)[:limit]
        top = best[np.argsort(-scores[best])]
    else:
        top = np.argsort(-scores)
    return [Near(int(ids[i]), float(scores[i]), int(starts[i])) for i in top]


@dataclass(frozen=True)
class IndexStats:
    messages: int  # stored messages the index covers (not deleted)
    vectors: int  # of them, those with a vector from the current model


class VectorIndex:
    """The vector half of recall: what is not embedded yet, storing vectors, nearest messages."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._rooms: dict[tuple[int, str], _RoomMatrix] = {}

    async def unindexed(self, model: str, limit: int) -> list[tuple[int, int, str]]:
        """(message id, conversation id, text) of messages without a ``model`` vector, newest first."""
        async with self.store._read() as session:
            rows = await session.execute(_UNINDEXED, {"model": model, "limit": limit})
            return [(row.id, row.conversation_id, row.text) for row in rows]

    async def save(self, model: str, vectors: list[tuple[int, np.ndarray]]) -> None:
        """Store (message id, vector) pairs of whole messages; messages deleted meanwhile are skipped."""
        await self.save_chunks(model, [(mid, 0, 0, vector) for mid, vector in vectors])

    async def save_chunks(self, model: str, vectors: list[tuple[int, int, int, np.ndarray]]) -> None:
        """Store (message id, chunk number, start offset, vector) rows in one transaction, so a
        message's chunks appear together; messages deleted meanwhile are skipped."""
        if not vectors:
            return
        params = [
            {"id": mid, "chunk": chunk, "start": start, "model": model, "vector": pack(vector)}
            for mid, chunk, start, vector in vectors
        ]

        async def work(session: AsyncSession) -> None:
            await session.execute(_INSERT, params)

        await self.store._write(work)

    async def drop_other_models(self, model: str) -> int:
        """Remove vectors made by any other model: a changed ``memory.embedding_model`` rebuilds the index."""

        async def work(session: AsyncSession) -> int:
            result = await session.execute(text(f"DELETE FROM {VECTOR_TABLE} WHERE model != :model"), {"model": model})
            return int(getattr(result, "rowcount", 0) or 0)

        removed = await self.store._write(work)
        if removed:
            self._rooms.clear()
        return removed

    async def stats(self, conversation_id: int, model: str) -> IndexStats:
        async with self.store._read() as session:
            messages = await session.scalar(
                text(
                    "SELECT count(*) FROM messages WHERE conversation_id = :c AND NOT deleted"
                    " AND role IN ('user', 'assistant')"
                ),
                {"c": conversation_id},
            )
            count = await session.scalar(_MESSAGES_WITH_VECTORS, {"conversation_id": conversation_id, "model": model})
        return IndexStats(int(messages or 0), int(count or 0))

    async def _matrix(self, conversation_id: int, model: str) -> _RoomMatrix | None:
        """The room's vectors, from memory when the table has not changed since they were read."""
        key = (conversation_id, model)
        cached = self._rooms.get(key)
        async with self.store._read() as session:
            params = {"conversation_id": conversation_id, "model": model}
            count, last_id = (await session.execute(_STATE, params)).one()
            count, last_id = int(count or 0), int(last_id or 0)
            if count == 0:
                self._rooms.pop(key, None)
                return None
            if cached is not None and (cached.count, cached.last_id) == (count, last_id):
                return cached
            after = cached.last_id if cached is not None and count > cached.count else 0
            rows = (await session.execute(_ROWS, {**params, "after": after})).all()
        ids, starts, vectors = await asyncio.to_thread(_unpack, rows)  # 10,000 rows take ms: not on the loop
        if after and cached is not None and vectors is not None and cached.count + len(rows) == count:
            ids, starts = np.concatenate([cached.ids, ids]), np.concatenate([cached.starts, starts])
            vectors = np.vstack([cached.vectors, vectors])
        elif after:  # rows were deleted as well as added: read the room again
            self._rooms.pop(key, None)
            return await self._matrix(conversation_id, model)
        if vectors is None:
            return None
        matrix = self._rooms[key] = _RoomMatrix(count, last_id, ids, starts, vectors)
        return matrix

    async def _matrices(self, conversation_ids: list[int], model: str) -> list[_RoomMatrix]:
        return [m for cid in conversation_ids if (m := await self._matrix(cid, model)) is not None]

    async def nearest(
        self, conversation_ids: list[int], model: str, query: np.ndarray | Awaitable[np.ndarray], limit: int
    ) -> list[Near]:
        """The ``limit`` messages of these rooms closest to ``query`` (by their best chunk), closest first.

        ``query`` may still be on its way (the question's embedding): the rooms' vectors are checked
        against the table meanwhile, so that check costs a turn no time.
        """
        if isinstance(query, np.ndarray):
            matrices = await self._matrices(conversation_ids, model)
        else:
            try:
                async with asyncio.TaskGroup() as group:
                    rooms = group.create_task(self._matrices(conversation_ids, model))
                    query = await query
            except BaseExceptionGroup as failed:  # the error itself, as if one ran after the other
                raise failed.exceptions[0] from None
            matrices = rooms.result()
        if not matrices:
            return []
        return await asyncio.to_thread(_closest, matrices, query.astype(np.float32), limit)

    async def messages(self, near: Sequence[Near]) -> list[SearchHit]:
        """The messages behind ``near`` that are still shown, as hits; a long one as the chunk that matched."""
        if not near:
            return []
        scores = {hit.message_id: hit.score for hit in near}
        starts = {hit.message_id: hit.start for hit in near}
        shown = MessageRow.deleted.is_(False)
        columns = (MessageRow.id, MessageRow.created_at, MessageRow.author_name, MessageRow.role, MessageRow.text)
        query = select(*columns).where(MessageRow.id.in_(bindparam("ids", expanding=True)), shown)
        async with self.store._read() as session:  # plain rows, not ORM objects: a third of the time
            rows = (await session.execute(query, {"ids": list(scores)})).all()
        return [
            SearchHit(r.id, r.created_at, r.author_name, r.role, excerpt(r.text, starts[r.id]), scores[r.id])
            for r in rows
        ]

    def size_bytes(self) -> int:
        """Bytes of vectors held in memory (the table holds the same, plus row overhead)."""
        return sum(room.vectors.nbytes for room in self._rooms.values())


__all__ = [
    "CHUNK_CHARS",
    "EXCERPT_CHARS",
    "VECTOR_TABLE",
    "IndexStats",
    "Near",
    "VectorIndex",
    "chunks",
    "excerpt",
    "pack",
]
