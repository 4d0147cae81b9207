"""Leases: which process serves a platform account when several processes share one database.

Each platform account (a Matrix user id, one Discord shard) must be served by exactly one
process at a time, or every message would be answered twice.

- PostgreSQL: a session advisory lock per account (``pg_try_advisory_lock``) on one dedicated
  connection held for the process's life. When the process dies, the server ends its session,
  and the lock goes with it at once.
- SQLite: a row in ``leases`` with an expiry, renewed by a heartbeat every ``ttl / 3`` seconds.
  A crashed process cannot release its row, so the row lapses ``ttl`` seconds after the last
  renewal and another process may take it then; at once if the holder ran on this host and its
  pid is gone.
- An in-memory SQLite database cannot be shared, so there every lease is granted.

The store migrates the schema (the ``leases`` table); start it before ``Leases``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from errors import StorageError
from memory.database import DB_ERRORS, WRITE_OPTION, is_sqlite, mask, open_engine, parse_url, safe_url
from memory.schema import LeaseRow

log = logging.getLogger(__name__)
_FAILURES: tuple[type[BaseException], ...] = (*DB_ERRORS, OSError)  # named, so type checkers read the except

LEASE_TTL_S = 30.0
T = TypeVar("T")


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock``: every process derives the same one."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def default_holder() -> str:
    """Who holds a lease row: enough to find the process in a log, unique even across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(holder: str) -> bool:
    """A holder on this host whose process is gone: a crashed bot that a service manager restarts
    at once must not wait out the ttl. Holders on other hosts lapse only by expiry."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, but someone else's (EPERM)
        return False
    return False


class _Backend(Protocol):
    async def open(self) -> None: ...
    async def take(self, name: str) -> bool: ...
    async def give_back(self, name: str) -> None: ...
    async def still_held(self, names: set[str]) -> set[str]: ...
    async def close(self) -> None: ...


class Leases:
    """The leases this process holds. ``acquire`` says whether this process may serve ``name``.

    ``on_lost(name)`` is called when a held lease slips away (the database connection broke,
    or a SQLite heartbeat could not renew in time): the caller must stop serving that account.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = LEASE_TTL_S,
        holder: str | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self._url = parse_url(url)
        self.ttl = ttl
        self.holder = holder or default_holder()
        self.on_lost = on_lost
        self._held: set[str] = set()
        self._backend: _Backend = _backend_for(self._url, ttl, self.holder)
        self._heartbeat: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # the dedicated connection / the rows: one change at a time

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    async def start(self) -> None:
        if self._heartbeat is not None:
            return
        await self._guarded("start", self._backend.open)
        self._heartbeat = asyncio.create_task(self._beat(), name="hearth-leases")

    async def acquire(self, name: str) -> bool:
        """Take the lease for ``name`` unless another live process holds it. Never waits for it."""
        if self._heartbeat is None:
            raise StorageError("the leases are not started")
        if name in self._held:
            return True
        async with self._lock:
            taken = await self._guarded("acquire", lambda: self._backend.take(name))
        if taken:
            self._held.add(name)
        return taken

    async def release(self, name: str) -> None:
        if name not in self._held:
            return
        self._held.discard(name)
        async with self._lock:
            await self._guarded("release", lambda: self._backend.give_back(name))

    async def close(self) -> None:
        """Release everything and close the connection; safe to call twice, and after a failure."""
        task, self._heartbeat = self._heartbeat, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for name in sorted(self._held):
            try:
                await self.release(name)
            except StorageError as exc:  # a broken connection: the server or the expiry frees it anyway
                log.warning("%s", exc)
        self._held.clear()
        await self._backend.close()

    async def _beat(self) -> None:
        """Renew (SQLite) or check (PostgreSQL) every held lease; report the ones that slipped away."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl / 3)
            if not self._held:
                last_ok = time.monotonic()
                continue
            try:
                async with self._lock:
                    kept = await self._guarded("renew", lambda: self._backend.still_held(set(self._held)))
                last_ok = time.monotonic()
            except StorageError as exc:
                if time.monotonic() - last_ok < self.ttl * 2 / 3:
                    log.warning("%s; retrying", exc)
                    continue
                log.error("%s", exc)
                kept = set()
            for name in sorted(self._held - kept):
                self._held.discard(name)
                log.error("lease for %s lost: another process may serve it now", name)
                if self.on_lost is not None:
                    self.on_lost(name)

    async def _guarded(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except _FAILURES as exc:
            detail = getattr(exc, "orig", None) or exc
            message = f"lease {what} failed on {safe_url(self._url)}: {type(exc).__name__}: {detail}"
            raise StorageError(mask(message, self._url), original=exc) from exc


def _backend_for(url: URL, ttl: float, holder: str) -> _Backend:
    if is_sqlite(url):
        if (url.database or "") in ("", ":memory:"):
            return _Unshared()
        return _LeaseRows(url, ttl, holder)
    if url.get_backend_name() == "postgresql":
        return _AdvisoryLocks(url)
    raise StorageError(f"leases: unsupported database {url.get_backend_name()!r} (SQLite or PostgreSQL)")


class _Unshared:
    """An in-memory database: no other process can see it, so there is nobody to share with."""

    async def open(self) -> None:
        return None

    async def take(self, name: str) -> bool:
        return True

    async def give_back(self, name: str) -> None:
        return None

    async def still_held(self, names: set[str]) -> set[str]:
        return names

    async def close(self) -> None:
        return None


class _AdvisoryLocks:
    """Session advisory locks on one connection that lives as long as the process."""

    def __init__(self, url: URL) -> None:
        self._url = url
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None

    async def open(self) -> None:
        self._engine = create_async_engine(self._url, poolclass=NullPool)
        self._conn = await self._engine.connect()

    async def _scalar(self, sql: str, **params: object) -> object:
        assert self._conn is not None
        value = (await self._conn.execute(text(sql), params)).scalar()
        await self._conn.commit()  # session locks outlive the transaction; don't sit idle in one
        return value

    async def take(self, name: str) -> bool:
        return bool(await self._scalar("SELECT pg_try_advisory_lock(:key)", key=advisory_key(name)))

    async def give_back(self, name: str) -> None:
        await self._scalar("SELECT pg_advisory_unlock(:key)", key=advisory_key(name))

    async def still_held(self, names: set[str]) -> set[str]:
        await self._scalar("SELECT 1")  # the session is alive, so are its locks
        return names

    async def close(self) -> None:
        conn, engine, self._conn, self._engine = self._conn, self._engine, None, None
        if conn is not None:
            try:
                await conn.close()
            except _FAILURES as exc:
                log.debug("closing the lease connection: %s", exc)
        if engine is not None:
            await engine.dispose()


class _LeaseRows:
    """Rows with an expiry in ``leases``; each change is one BEGIN IMMEDIATE transaction."""

    def __init__(self, url: URL, ttl: float, holder: str) -> None:
        self._url = url
        self._ttl = ttl
        self._holder = holder
        self._engine: AsyncEngine | None = None

    async def open(self) -> None:
        self._engine = open_engine(self._url)

    def _begin(self):
        assert self._engine is not None
        return self._engine.execution_options(**{WRITE_OPTION: True}).begin()

    async def take(self, name: str) -> bool:
        now = time.time()
        async with self._begin() as conn:
            query = select(LeaseRow.holder, LeaseRow.expires_at).where(LeaseRow.name == name)
            row = (await conn.execute(query)).first()
            if row is None:
                await conn.execute(
                    insert(LeaseRow).values(name=name, holder=self._holder, expires_at=now + self._ttl)
                )
                return True
            if row.holder != self._holder and row.expires_at > now and not _dead_here(row.holder):
                return False
            if row.holder != self._holder:
                log.info("lease for %s: %s let it lapse; taking it over", name, row.holder)
            await conn.execute(
                update(LeaseRow).where(LeaseRow.name == name).values(holder=self._holder, expires_at=now + self._ttl)
            )
            return True

    async def give_back(self, name: str) -> None:
        async with self._begin() as conn:
            await conn.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == self._holder))

    async def still_held(self, names: set[str]) -> set[str]:
        kept: set[str] = set()
        async with self._begin() as conn:
            for name in sorted(names):
                result = await conn.execute(
                    update(LeaseRow)
                    .where(LeaseRow.name == name, LeaseRow.holder == self._holder)
                    .values(expires_at=time.time() + self._ttl)
                )
                if result.rowcount:
                    kept.add(name)
        return kept

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()
