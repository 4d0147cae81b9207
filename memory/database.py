"""Open the database: URL handling, the one AsyncEngine, and SQLite's connection setup.

Everything SQLite-specific lives here, as connection events, so the store's SQL stays
portable and the same URL could name PostgreSQL (asyncpg) instead.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from errors import StorageError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/hearth.db"

# Execution option naming a transaction that will write. On SQLite it begins with
# BEGIN IMMEDIATE, taking the write lock up front, so a second process waits out the
# busy timeout instead of failing at once when a read turns into a write.
WRITE_OPTION = "hearth_write"
BUSY_TIMEOUT_MS = 10_000

# What a database failure can look like once it reaches us.
DB_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, sqlite3.Error)


def parse_url(url: str) -> URL:
    """Parse without ever echoing the raw string: it may hold a password."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise StorageError(
            "the database URL cannot be parsed (expected e.g. sqlite+aiosqlite:///data/hearth.db)"
        ) from None


def safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def mask(message: str, url: URL) -> str:
    """Belt and braces: drivers sometimes quote their connection string in errors."""
    if url.password:
        message = message.replace(str(url.password), "***")
    return message


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def sqlite_file(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory or ``file:`` URI database."""
    database = url.database or ""
    if not is_sqlite(url) or database in ("", ":memory:") or url.query.get("uri") == "true":
        return None
    return Path(database).expanduser()


def open_engine(url: URL) -> AsyncEngine:
    """Create the store's single engine; for SQLite also the file's folder and the connection setup."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection, _record) -> None:
    """WAL lets readers run beside the writer; NORMAL sync is still durable at every commit
    against a killed process (only an OS crash can lose the newest commits)."""
    # Take BEGIN away from the sqlite3 module, which skips it for SELECT and DDL: then a
    # read sees one snapshot and a migration is one atomic transaction. See _sqlite_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
