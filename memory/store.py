"""The memory store: conversations, messages, summaries, settings, users and adapter state.

SQLAlchemy 2 async ORM over aiosqlite (or asyncpg: the SQL stays portable). SQLite runs
in WAL mode with a busy timeout, and writes are serialized by one asyncio lock, so many
rooms writing at once never see "database is locked". Transactions are short: one
method, one transaction. Database failures leave as StorageError, with the URL's
password masked.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from errors import StorageError
from memory.migrate import upgrade_connection
from memory.schema import (
    ConversationRow,
    MessageRow,
    PlatformStateRow,
    RoomSettingsRow,
    SummaryRow,
    UserRow,
)
from memory.types import ConversationKey, RoomSettings, StoredMessage, Summary

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/hearth.db"
SETTINGS_FIELDS = ("persona", "trigger_mode", "sampling", "extra")

P = ParamSpec("P")
T = TypeVar("T")


def _translated(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn SQLAlchemy failures into StorageError at the store's edge."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except SQLAlchemyError as exc:
            store = args[0]
            raise StorageError(
                f"database error on {store.safe_url} during {method.__name__}: {type(exc).__name__}", original=exc
            ) from exc

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
    )


def _summary(row: SummaryRow) -> Summary:
    return Summary(row.conversation_id, row.text, row.covers_through_id, row.stale, row.updated_at)


class MemoryStore:
    """Everything hearth remembers. ``start()`` opens and migrates; ``close()`` releases."""

    def __init__(self, url: str = DEFAULT_DATABASE_URL) -> None:
        self.url = url
        parsed = make_url(url)
        self.safe_url = parsed.render_as_string(hide_password=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._write_lock = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        parsed = make_url(self.url)
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._engine = create_async_engine(self.url)
            if self.is_sqlite:
                event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
            async with self._engine.begin() as connection:
                await connection.run_sync(upgrade_connection)
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"cannot open the database {self.safe_url}: {exc}", original=exc) from exc
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def _session(self) -> AsyncSession:
        if self._sessions is None:
            raise StorageError("the memory store is not started")
        return self._sessions()

    async def _write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """One short write transaction, serialized so SQLite never reports a lock."""
        async with self._write_lock, self._session() as session, session.begin():
            return await work(session)

    # -- conversations ------------------------------------------------------------------

    @_translated
    async def find_conversation(self, key: ConversationKey) -> int | None:
        async with self._session() as session:
            return await session.scalar(
                select(ConversationRow.id).where(
                    ConversationRow.platform == key.platform,
                    ConversationRow.room_id == key.room_id,
                    ConversationRow.thread_id == (key.thread_id or ""),
                )
            )

    @_translated
    async def conversation_id(self, key: ConversationKey) -> int:
        found = await self.find_conversation(key)
        if found is not None:
            return found

        async def create(session: AsyncSession) -> int:
            existing = await session.scalar(
                select(ConversationRow.id).where(
                    ConversationRow.platform == key.platform,
                    ConversationRow.room_id == key.room_id,
                    ConversationRow.thread_id == (key.thread_id or ""),
                )
            )
            if existing is not None:
                return existing
            row = ConversationRow(platform=key.platform, room_id=key.room_id, thread_id=key.thread_id or "")
            session.add(row)
            await session.flush()
            return row.id

        return await self._write(create)

    @_translated
    async def conversations(self) -> list[tuple[int, ConversationKey]]:
        async with self._session() as session:
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
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"unknown role {role!r}")

        async def add(session: AsyncSession) -> StoredMessage:
            row = MessageRow(
                conversation_id=conversation_id,
                role=role,
                author_id=author_id,
                author_name=author_name,
                text=text.replace("\x00", ""),
                platform_message_id=platform_message_id,
                created_at=datetime.now(UTC),
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
        query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
        if after_id is not None:
            query = query.where(MessageRow.id > after_id)
        if not include_deleted:
            query = query.where(MessageRow.deleted.is_(False))
        newest_first = last is not None  # "the last N" is read newest-first, then put back in order
        query = query.order_by(MessageRow.id.desc()).limit(last) if newest_first else query.order_by(MessageRow.id)
        async with self._session() as session:
            rows = (await session.scalars(query)).all()
        result = [_message(r) for r in rows]
        return result[::-1] if newest_first else result

    @_translated
    async def count_messages(self, conversation_id: int) -> int:
        async with self._session() as session:
            return await session.scalar(
                select(func.count(MessageRow.id)).where(
                    MessageRow.conversation_id == conversation_id, MessageRow.deleted.is_(False)
                )
            ) or 0

    @_translated
    async def get_message(self, conversation_id: int, platform_message_id: str) -> StoredMessage | None:
        async with self._session() as session:
            row = await session.scalar(self._by_platform_id(conversation_id, platform_message_id))
        return _message(row) if row else None

    @staticmethod
    def _by_platform_id(conversation_id: int, platform_message_id: str):
        return (
            select(MessageRow)
            .where(MessageRow.conversation_id == conversation_id)
            .where(MessageRow.platform_message_id == platform_message_id)
            .order_by(MessageRow.id.desc())
            .limit(1)
        )

    async def _change(self, conversation_id: int, row_query, apply: Callable[[MessageRow], None]):
        async def work(session: AsyncSession) -> StoredMessage | None:
            row = await session.scalar(row_query)
            if row is None:
                return None
            apply(row)
            summary = await session.scalar(select(SummaryRow).where(SummaryRow.conversation_id == conversation_id))
            if summary is not None and row.id <= summary.covers_through_id:
                summary.stale = True
            await session.flush()
            return _message(row)

        return await self._write(work)

    @_translated
    async def edit_message(self, conversation_id: int, platform_message_id: str, new_text: str) -> StoredMessage | None:
        def apply(row: MessageRow) -> None:
            row.text = new_text.replace("\x00", "")
            row.edited = True
            row.edited_at = datetime.now(UTC)
            row.token_count = None

        return await self._change(conversation_id, self._by_platform_id(conversation_id, platform_message_id), apply)

    @_translated
    async def delete_message(self, conversation_id: int, platform_message_id: str) -> StoredMessage | None:
        def apply(row: MessageRow) -> None:
            row.deleted = True

        return await self._change(conversation_id, self._by_platform_id(conversation_id, platform_message_id), apply)

    @_translated
    async def delete_message_by_id(self, conversation_id: int, message_id: int) -> StoredMessage | None:
        """Soft-delete by hearth's own id (bot replies have no platform id before they are sent)."""
        query = select(MessageRow).where(MessageRow.conversation_id == conversation_id, MessageRow.id == message_id)

        def apply(row: MessageRow) -> None:
            row.deleted = True

        return await self._change(conversation_id, query, apply)

    @_translated
    async def set_platform_message_id(self, message_id: int, platform_message_id: str) -> None:
        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(MessageRow).where(MessageRow.id == message_id).values(platform_message_id=platform_message_id)
            )

        await self._write(work)

    @_translated
    async def set_token_count(self, message_id: int, count: int) -> None:
        async def work(session: AsyncSession) -> None:
            await session.execute(update(MessageRow).where(MessageRow.id == message_id).values(token_count=count))

        await self._write(work)

    # -- summaries ----------------------------------------------------------------------

    @_translated
    async def summary(self, conversation_id: int) -> Summary | None:
        async with self._session() as session:
            row = await session.scalar(select(SummaryRow).where(SummaryRow.conversation_id == conversation_id))
        return _summary(row) if row else None

    @_translated
    async def save_summary(self, conversation_id: int, text: str, covers_through_id: int) -> Summary:
        async def work(session: AsyncSession) -> Summary:
            row = await session.scalar(select(SummaryRow).where(SummaryRow.conversation_id == conversation_id))
            if row is None:
                row = SummaryRow(conversation_id=conversation_id, text=text, covers_through_id=covers_through_id)
                session.add(row)
            row.text, row.covers_through_id, row.stale = text, covers_through_id, False
            row.updated_at = datetime.now(UTC)
            await session.flush()
            return _summary(row)

        return await self._write(work)

    @_translated
    async def mark_summary_stale(self, conversation_id: int) -> None:
        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(SummaryRow).where(SummaryRow.conversation_id == conversation_id).values(stale=True)
            )

        await self._write(work)

    @_translated
    async def clear_summary(self, conversation_id: int) -> None:
        async def work(session: AsyncSession) -> None:
            await session.execute(delete(SummaryRow).where(SummaryRow.conversation_id == conversation_id))

        await self._write(work)

    # -- room settings ------------------------------------------------------------------

    @_translated
    async def room_settings(self, conversation_id: int) -> RoomSettings:
        async with self._session() as session:
            row = await session.get(RoomSettingsRow, conversation_id)
        if row is None:
            return RoomSettings()
        return RoomSettings(row.persona, row.trigger_mode, dict(row.sampling or {}), dict(row.extra or {}))

    @_translated
    async def update_room_settings(self, conversation_id: int, **changes: Any) -> RoomSettings:
        unknown = set(changes) - set(SETTINGS_FIELDS)
        if unknown:
            raise ValueError(f"unknown room setting(s): {', '.join(sorted(unknown))}")

        async def work(session: AsyncSession) -> RoomSettings:
            row = await session.get(RoomSettingsRow, conversation_id)
            if row is None:
                row = RoomSettingsRow(conversation_id=conversation_id, sampling={}, extra={})
                session.add(row)
            for name, value in changes.items():
                setattr(row, name, dict(value) if name in ("sampling", "extra") else value)
            await session.flush()
            return RoomSettings(row.persona, row.trigger_mode, dict(row.sampling or {}), dict(row.extra or {}))

        return await self._write(work)

    # -- forgetting ---------------------------------------------------------------------

    @_translated
    async def reset(self, conversation_id: int) -> int:
        async def work(session: AsyncSession) -> int:
            result = await session.execute(delete(MessageRow).where(MessageRow.conversation_id == conversation_id))
            await session.execute(delete(SummaryRow).where(SummaryRow.conversation_id == conversation_id))
            return result.rowcount or 0

        return await self._write(work)

    @_translated
    async def forget_author(self, conversation_id: int, author_id: str) -> int:
        async def work(session: AsyncSession) -> int:
            result = await session.execute(
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
        async with self._session() as session:
            conversation = await session.get(ConversationRow, conversation_id)
        if conversation is None:
            raise StorageError(f"no conversation {conversation_id}")
        settings = await self.room_settings(conversation_id)
        summary = await self.summary(conversation_id)
        messages = await self.messages(conversation_id)
        return {
            "conversation": {
                "platform": conversation.platform,
                "room_id": conversation.room_id,
                "thread_id": conversation.thread_id or None,
            },
            "settings": {
                "persona": settings.persona,
                "trigger_mode": settings.trigger_mode,
                "sampling": settings.sampling,
            },
            "summary": None
            if summary is None
            else {"text": summary.text, "covers_through_id": summary.covers_through_id, "stale": summary.stale},
            "messages": [
                {
                    "id": m.id,
                    "role": m.role,
                    "author_id": m.author_id,
                    "author_name": m.author_name,
                    "text": m.text,
                    "platform_message_id": m.platform_message_id,
                    "created_at": m.created_at.isoformat(),
                    "edited": m.edited,
                }
                for m in messages
            ],
        }

    # -- users and adapter state ----------------------------------------------------------

    @_translated
    async def upsert_user(self, platform: str, user_id: str, display_name: str) -> None:
        async def work(session: AsyncSession) -> None:
            row = await session.scalar(select(UserRow).where(UserRow.platform == platform, UserRow.user_id == user_id))
            if row is None:
                session.add(UserRow(platform=platform, user_id=user_id, display_name=display_name))
            elif row.display_name != display_name:
                row.display_name, row.updated_at = display_name, datetime.now(UTC)

        await self._write(work)

    @_translated
    async def display_name(self, platform: str, user_id: str) -> str | None:
        async with self._session() as session:
            return await session.scalar(
                select(UserRow.display_name).where(UserRow.platform == platform, UserRow.user_id == user_id)
            )

    @_translated
    async def get_state(self, namespace: str, key: str) -> str | None:
        async with self._session() as session:
            row = await session.get(PlatformStateRow, (namespace, key))
        return row.value if row else None

    @_translated
    async def set_state(self, namespace: str, key: str, value: str) -> None:
        async def work(session: AsyncSession) -> None:
            row = await session.get(PlatformStateRow, (namespace, key))
            if row is None:
                session.add(PlatformStateRow(namespace=namespace, key=key, value=value))
            else:
                row.value = value

        await self._write(work)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL lets readers run beside the writer; NORMAL sync is durable at each WAL commit."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
