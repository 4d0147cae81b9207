"""The memory store: conversations, messages, summaries, settings and adapter state.

SQLAlchemy 2 async ORM over aiosqlite (or asyncpg: the SQL here stays portable). One
method is one short transaction. Writes go one at a time through an asyncio lock, and
on SQLite each takes the write lock up front (see ``memory.database``), so many rooms
writing at once never see "database is locked". Database failures leave as
StorageError, with any password in the URL masked.
"""

from __future__ import annotations

import functools
import json
import re
from asyncio import Lock
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import CursorResult, Select, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from errors import StorageError
from memory.database import (
    DB_ERRORS,
    DEFAULT_DATABASE_URL,
    WRITE_OPTION,
    mask,
    open_engine,
    parse_url,
    safe_url,
)
from memory.export import export_document
from memory.migrate import upgrade
from memory.recall_index import (
    SearchHit,
    coverage,
    holds,
    query_terms,
    rarity,
    search_statement,
)
from memory.schema import Base, ConversationRow, MessageRow, PlatformStateRow, RoomSettingsRow, SummaryRow
from memory.types import ROLES, ConversationKey, RoomSettings, StoredMessage, Summary
from memory.vector_index import VECTOR_TABLE

__all__ = ["DEFAULT_DATABASE_URL", "MemoryStore"]

SETTINGS_FIELDS = ("persona", "trigger_mode", "sampling", "extra")

P = ParamSpec("P")
T = TypeVar("T")

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Make chat text storable anywhere: PostgreSQL refuses NUL, and no UTF-8 codec takes a lone
    surrogate (a Matrix event can carry one through a JSON ``\\ud83d`` escape)."""
    return _LONE_SURROGATE.sub("\ufffd", text.replace("\x00", ""))

# Named tuples of exception types, so a type checker can read the ``except`` clauses.
_FAILURES: tuple[type[BaseException], ...] = (*DB_ERRORS, UnicodeError)
_OPEN_FAILURES: tuple[type[BaseException], ...] = (*DB_ERRORS, OSError, ImportError)


def _translated(
    method: Callable[Concatenate[MemoryStore, P], Awaitable[T]],
) -> Callable[Concatenate[MemoryStore, P], Awaitable[T]]:
    """Turn database failures into StorageError at the store's edge."""

    @functools.wraps(method)
    async def wrapper(store: MemoryStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(store, *args, **kwargs)
        except _FAILURES as exc:
            detail = getattr(exc, "orig", None) or exc  # the driver's own words, never the SQL or its parameters
            message = f"database error on {store.safe_url} in {method.__name__}: {type(exc).__name__}: {detail}"
            raise StorageError(mask(message, store._url), original=exc) from exc

    return wrapper


def _message(row: MessageRow) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        conversation_id=row.conversation_id,
        role=row.role,
        author_id=row.author_id,
        author_name=row.author_name,
        text=row.text,
        platform_message_id=row.platform_message_id,
        created_at=row.created_at,
        edited=row.edited,
        deleted=row.deleted,
        token_count=row.token_count,
        edited_at=row.edited_at,
    )


def _summary(row: SummaryRow) -> Summary:
    return Summary(row.conversation_id, row.text, row.covers_through_id, row.stale, row.updated_at)


def _settings(row: RoomSettingsRow | None) -> RoomSettings:
    if row is None:
        return RoomSettings()
    return RoomSettings(row.persona, row.trigger_mode, dict(row.sampling or {}), dict(row.extra or {}))


def _key_filter(key: ConversationKey) -> Select[int]:
    return select(ConversationRow.id).where(
        ConversationRow.platform == key.platform,
        ConversationRow.room_id == key.room_id,
        ConversationRow.thread_id == (key.thread_id or ""),
    )


def _by_platform_id(conversation_id: int, platform_message_id: str) -> Select[MessageRow]:
    """The newest row with that platform id (a platform may reuse an id after a resend)."""
    return (
        select(MessageRow)
        .where(MessageRow.conversation_id == conversation_id, MessageRow.platform_message_id == platform_message_id)
        .order_by(MessageRow.id.desc())
        .limit(1)
    )


class MemoryStore:
    """Everything hearth remembers. ``start()`` opens and migrates; ``close()`` releases."""

    def __init__(self, url: str = DEFAULT_DATABASE_URL) -> None:
        self._url = parse_url(url)
        self.url = url
        self.safe_url = safe_url(self._url)
        self._engine: AsyncEngine | None = None
        self._reads: async_sessionmaker[AsyncSession] | None = None
        self._writes: async_sessionmaker[AsyncSession] | None = None
        # One writer at a time in this process: on SQLite that is what the file allows anyway,
        # and on any backend it keeps the get-or-create and upsert methods free of races.
        self._write_lock = Lock()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StorageError("the memory store is not started")
        return self._engine

    async def start(self) -> None:
        """Open the database and migrate it to head. Safe to call twice."""
        if self._engine is not None:
            return
        try:
            engine = open_engine(self._url)
        except _OPEN_FAILURES as exc:
            message = f"cannot open the database {self.safe_url}: {type(exc).__name__}: {exc}"
            raise StorageError(mask(message, self._url), original=exc) from exc
        try:
            await upgrade(engine)
        except StorageError:
            await engine.dispose()
            raise
        except Exception as exc:  # a driver, a file, or a broken migration script: the store is unusable
            await engine.dispose()
            message = f"cannot open the database {self.safe_url}: {type(exc).__name__}: {getattr(exc, 'orig', exc)}"
            raise StorageError(mask(message, self._url), original=exc) from exc
        self._engine = engine
        self._reads = async_sessionmaker(engine, expire_on_commit=False)
        self._writes = async_sessionmaker(engine, expire_on_commit=False, execution_options={WRITE_OPTION: True})

    async def close(self) -> None:
        engine, self._engine, self._reads, self._writes = self._engine, None, None, None
        if engine is not None:
            await engine.dispose()

    def _read(self) -> AsyncSession:
        if self._reads is None:
            raise StorageError("the memory store is not started")
        return self._reads()

    async def _write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """One short write transaction, serialized so SQLite never reports a lock."""
        if self._writes is None:
            raise StorageError("the memory store is not started")
        async with self._write_lock, self._writes() as session, session.begin():
            return await work(session)

    # -- conversations ------------------------------------------------------------------

    @_translated
    async def find_conversation(self, key: ConversationKey) -> int | None:
        async with self._read() as session:
            return await session.scalar(_key_filter(key))

    @_translated
    async def conversation_id(self, key: ConversationKey) -> int:
        """Get or create. Looks first without the write lock: nearly every call finds one."""
        found = await self.find_conversation(key)
        if found is not None:
            return found

        async def create(session: AsyncSession) -> int:
            existing = await session.scalar(_key_filter(key))
            if existing is not None:
                return existing
            row = ConversationRow(
                platform=key.platform, room_id=key.room_id, thread_id=key.thread_id or "", created_at=datetime.now(UTC)
            )
            session.add(row)
            await session.flush()
            return row.id

        try:
            return await self._write(create)
        except IntegrityError:  # another process created it between our look and our insert
            found = await self.find_conversation(key)
            if found is None:
                raise
            return found

    @_translated
    async def conversations(self) -> list[tuple[int, ConversationKey]]:
        async with self._read() as session:
            rows = (await session.scalars(select(ConversationRow).order_by(ConversationRow.id))).all()
        return [(r.id, ConversationKey(r.platform, r.room_id, r.thread_id or None)) for r in rows]

    # -- messages -----------------------------------------------------------------------

    @_translated
    async def append(
        self,
        conversation_id: int,
        *,
        role: str,
        author_id: str,
        author_name: str,
        text: str,
        platform_message_id: str | None = None,
        token_count: int | None = None,
    ) -> StoredMessage:
        """Store one message. NUL is dropped and lone surrogates become U+FFFD (see clean_text)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")

        async def add(session: AsyncSession) -> StoredMessage:
            row = MessageRow(
                conversation_id=conversation_id,
                role=role,
                author_id=author_id,
                author_name=clean_text(author_name),
                text=clean_text(text),
                platform_message_id=platform_message_id,
                created_at=datetime.now(UTC),
                edited=False,
                deleted=False,
                token_count=token_count,
            )
            session.add(row)
            await session.flush()
            return _message(row)

        return await self._write(add)

    @_translated
    async def messages(
        self,
        conversation_id: int,
        *,
        after_id: int | None = None,
        last: int | None = None,
        include_deleted: bool = False,
    ) -> list[StoredMessage]:
        """Oldest first. ``after_id``: only ids above it; ``last``: only the newest N of those."""
        if last is not None and last < 0:
            raise ValueError("last must be >= 0")
        query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
        if after_id is not None:
            query = query.where(MessageRow.id > after_id)
        if not include_deleted:
            query = query.where(MessageRow.deleted.is_(False))
        # for `last`, read newest-first so LIMIT keeps the newest, then put them back in order
        query = query.order_by(MessageRow.id.desc()).limit(last) if last is not None else query.order_by(MessageRow.id)
        async with self._read() as session:
            rows = (await session.scalars(query)).all()
        result = [_message(r) for r in rows]
        return result[::-1] if last is not None else result

    @_translated
    async def search(
        self, conversation_id: int, query: str, limit: int = 10, *, specific: bool = False
    ) -> list[SearchHit]:
        """This room's stored messages (deleted ones never) that share a word with ``query``, best first:
        most of the query's words, then the index's own rank. ``specific`` keeps only messages holding
        the query's rarest word found in the room: lines that merely share its sentence shape
        ("I walked past a … on the way here") do not count.

        ``query`` is plain user text: it is never read as search syntax (``memory.recall_index``).
        """
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        statement, words = search_statement(self.engine.dialect.name, terms)
        params = {**words, "conversation_id": conversation_id, "limit": min(limit * 4, 200)}
        async with self._read() as session:
            rows = (await session.execute(statement, params)).all()  # best first
        if not rows:
            return []
        first = rows[0]._mapping
        total, counts = first["total"], [first[f"c{index}"] for index in range(len(terms))]
        weights, found = {}, {}
        for term, count in zip(terms, counts, strict=True):
            weights[term] = rarity(total or 0, count or 0)
            if count:
                found[term] = weights[term]
        if specific and found:
            rarest = max(found, key=lambda term: found[term])
            rows = [r for r in rows if holds(rarest, r.text)]
        hits = [SearchHit(r.id, r.created_at, r.author_name, r.role, r.text, coverage(weights, r.text)) for r in rows]
        return sorted(hits, key=lambda hit: -hit.score)[:limit]  # a stable sort: the index's rank breaks ties

    @_translated
    async def count_messages(self, conversation_id: int) -> int:
        """Messages not deleted."""
        async with self._read() as session:
            count = await session.scalar(
                select(func.count(MessageRow.id)).where(
                    MessageRow.conversation_id == conversation_id, MessageRow.deleted.is_(False)
                )
            )
        return count or 0

    @_translated
    async def get_message(self, conversation_id: int, platform_message_id: str) -> StoredMessage | None:
        async with self._read() as session:
            row = await session.scalar(_by_platform_id(conversation_id, platform_message_id))
        return _message(row) if row else None

    async def _change(
        self, conversation_id: int, query: Select[MessageRow], apply: Callable[[MessageRow], None]
    ) -> StoredMessage | None:
        """Change one message; a summary that already folded it in no longer tells the truth."""

        async def work(session: AsyncSession) -> StoredMessage | None:
            row = await session.scalar(query)
            if row is None:
                return None
            apply(row)
            # a vector of the old text (or of a deleted message) must not be recalled
            await session.execute(text(f"DELETE FROM {VECTOR_TABLE} WHERE message_id = :id"), {"id": row.id})
            await session.execute(
                update(SummaryRow)
                .where(SummaryRow.conversation_id == conversation_id, SummaryRow.covers_through_id >= row.id)
                .values(stale=True)
            )
            await session.flush()
            return _message(row)

        return await self._write(work)

    @_translated
    async def edit_message(self, conversation_id: int, platform_message_id: str, new_text: str) -> StoredMessage | None:
        """Replace the text; None if no such message. The old token count no longer applies."""

        def apply(row: MessageRow) -> None:
            row.text = clean_text(new_text)
            row.edited = True
            row.edited_at = datetime.now(UTC)
            row.token_count = None

        return await self._change(conversation_id, _by_platform_id(conversation_id, platform_message_id), apply)

    @_translated
    async def delete_message(self, conversation_id: int, platform_message_id: str) -> StoredMessage | None:
        """Soft delete: the row stays (so edits after a delete still resolve) but is never shown again."""

        def apply(row: MessageRow) -> None:
            row.deleted = True

        return await self._change(conversation_id, _by_platform_id(conversation_id, platform_message_id), apply)

    @_translated
    async def delete_message_by_id(self, conversation_id: int, message_id: int) -> StoredMessage | None:
        """Soft-delete by hearth's own id (a bot reply has no platform id before it is sent)."""
        query = select(MessageRow).where(MessageRow.conversation_id == conversation_id, MessageRow.id == message_id)

        def apply(row: MessageRow) -> None:
            row.deleted = True

        return await self._change(conversation_id, query, apply)

    # -- summaries ----------------------------------------------------------------------

    @_translated
    async def summary(self, conversation_id: int) -> Summary | None:
        async with self._read() as session:
            row = await session.scalar(select(SummaryRow).where(SummaryRow.conversation_id == conversation_id))
        return _summary(row) if row else None

    @_translated
    async def save_summary(self, conversation_id: int, text: str, covers_through_id: int) -> Summary:
        """Insert or replace the room's summary; a fresh one is never stale."""

        async def work(session: AsyncSession) -> Summary:
            fresh = {"text": clean_text(text), "covers_through_id": covers_through_id, "stale": False}
            fresh["updated_at"] = datetime.now(UTC)
            await _upsert(session, SummaryRow, {"conversation_id": conversation_id}, fresh)
            query = select(SummaryRow).where(SummaryRow.conversation_id == conversation_id)
            row = await session.scalar(query.execution_options(populate_existing=True))
            assert row is not None  # the upsert above wrote it in this transaction
            return _summary(row)

        return await self._write(work)

    @_translated
    async def clear_summary(self, conversation_id: int) -> None:
        async def work(session: AsyncSession) -> None:
            await session.execute(delete(SummaryRow).where(SummaryRow.conversation_id == conversation_id))

        await self._write(work)

    # -- room settings ------------------------------------------------------------------

    @_translated
    async def room_settings(self, conversation_id: int) -> RoomSettings:
        """The room's overrides; all defaults if none were ever set."""
        async with self._read() as session:
            row = await session.get(RoomSettingsRow, conversation_id)
        return _settings(row)

    @_translated
    async def update_room_settings(self, conversation_id: int, **changes: Any) -> RoomSettings:
        """Change only the named fields. ``sampling``/``extra`` are replaced whole (None clears)."""
        values = _checked_settings(changes)

        async def work(session: AsyncSession) -> RoomSettings:
            empty: dict[str, Any] = {"sampling": {}, "extra": {}}
            await _upsert(session, RoomSettingsRow, {"conversation_id": conversation_id}, empty, on_conflict={})
            row = await session.get(RoomSettingsRow, conversation_id, populate_existing=True, with_for_update=True)
            for name, value in values.items():
                setattr(row, name, value)
            await session.flush()
            return _settings(row)

        return await self._write(work)

    # -- forgetting ---------------------------------------------------------------------

    @_translated
    async def reset(self, conversation_id: int) -> int:
        """Hard-delete the room's messages (deleted ones too) and its summary; settings stay."""

        async def work(session: AsyncSession) -> int:
            result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
                delete(MessageRow).where(MessageRow.conversation_id == conversation_id)
            )
            await session.execute(delete(SummaryRow).where(SummaryRow.conversation_id == conversation_id))
            return result.rowcount or 0

        return await self._write(work)

    @_translated
    async def forget_author(self, conversation_id: int, author_id: str) -> int:
        """Hard-delete one author's messages here. The summary may quote them, so it goes stale."""

        async def work(session: AsyncSession) -> int:
            result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
                delete(MessageRow).where(
                    MessageRow.conversation_id == conversation_id, MessageRow.author_id == author_id
                )
            )
            if result.rowcount:
                await session.execute(
                    update(SummaryRow).where(SummaryRow.conversation_id == conversation_id).values(stale=True)
                )
            return result.rowcount or 0

        return await self._write(work)

    @_translated
    async def export(self, conversation_id: int) -> dict[str, Any]:
        """The room as one JSON-serializable dict, read in one transaction (one consistent snapshot)."""
        async with self._read() as session:
            conversation = await session.get(ConversationRow, conversation_id)
            if conversation is None:
                raise StorageError(f"no conversation {conversation_id}")
            settings = await session.get(RoomSettingsRow, conversation_id)
            summary = await session.scalar(select(SummaryRow).where(SummaryRow.conversation_id == conversation_id))
            rows = (
                await session.scalars(
                    select(MessageRow)
                    .where(MessageRow.conversation_id == conversation_id, MessageRow.deleted.is_(False))
                    .order_by(MessageRow.id)
                )
            ).all()
        key = ConversationKey(conversation.platform, conversation.room_id, conversation.thread_id or None)
        return export_document(
            conversation_id, key, _settings(settings), _summary(summary) if summary else None, map(_message, rows)
        )

    # -- adapter state ----------------------------------------------------------------------

    @_translated
    async def get_state(self, namespace: str, key: str) -> str | None:
        """A durable adapter value, e.g. ("matrix", "next_batch")."""
        async with self._read() as session:
            row = await session.get(PlatformStateRow, (namespace, key))
        return row.value if row else None

    @_translated
    async def set_state(self, namespace: str, key: str, value: str) -> None:
        async def work(session: AsyncSession) -> None:
            await _upsert(session, PlatformStateRow, {"namespace": namespace, "key": key}, {"value": value})

        await self._write(work)


async def _upsert(
    session: AsyncSession,
    table: type[Base],
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    on_conflict: Mapping[str, Any] | None = None,
) -> None:
    """INSERT, or on a key clash UPDATE with ``on_conflict`` (default: ``values``; empty: leave the row).

    One statement, so two processes writing the same key at once cannot both insert: a
    select-then-insert would fail on PostgreSQL, where nothing holds the whole database's write lock.
    """
    dialect = session.get_bind().dialect.name
    statement: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        statement = postgresql.insert(table).values({**key, **values})
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values({**key, **values})
    else:
        raise StorageError(f"unsupported database dialect {dialect!r} (SQLite or PostgreSQL)")
    changes = dict(values if on_conflict is None else on_conflict)
    if changes:
        statement = statement.on_conflict_do_update(index_elements=list(key), set_=changes)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(key))
    await session.execute(statement)


def _checked_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse bad settings before they reach the database, as ValueError (a caller's mistake)."""
    unknown = set(changes) - set(SETTINGS_FIELDS)
    if unknown:
        raise ValueError(f"unknown room setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name in ("persona", "trigger_mode"):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None, not {type(value).__name__}")
            values[name] = value
            continue
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a mapping or None, not {type(value).__name__}")
        value = dict(value or {})
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be JSON-serializable: {exc}") from exc
        values[name] = value
    return values
