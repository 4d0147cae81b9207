"""Run the Alembic migrations in-process, so every start brings the schema to head.

No alembic.ini is needed: the Config is built here, pointing at ``memory/migrations``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from errors import StorageError
from memory.database import WRITE_OPTION

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# PostgreSQL advisory lock key held while migrating (a constant: every hearth process agrees on it).
# SQLite needs none: the migration's BEGIN IMMEDIATE already lets one process at a time in.
MIGRATION_LOCK_KEY = 0x6865617274680001


def alembic_config(url: str | None = None, script_location: Path | str = MIGRATIONS_DIR) -> Config:
    """A Config built in code. ``url`` is only for driving migrations without a store (tests, CLI)."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url)
    return config


def head_revision(config: Config | None = None) -> str:
    head = ScriptDirectory.from_config(config or alembic_config()).get_current_head()
    if head is None:
        raise StorageError("no migrations found")
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_connection(connection: Connection, revision: str = "head", config: Config | None = None) -> None:
    """Upgrade on a live sync connection (reach it through ``AsyncConnection.run_sync``).

    The whole upgrade is one write transaction. On SQLite, foreign keys are off while it
    runs: a batch migration rebuilds a table by dropping the old one, and with foreign
    keys on that drop would cascade-delete every child row (all messages of every room).
    They are checked before commit instead, and switched back on afterwards.
    """
    config = config or alembic_config()
    config.attributes["connection"] = connection
    sqlite = connection.dialect.name == "sqlite"
    if connection.in_transaction():  # the caller owns the transaction (and the pragmas)
        command.upgrade(config, revision)
        return
    if sqlite:
        _pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":  # processes starting together migrate one at a time
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            try:
                command.upgrade(config, revision)
            except CommandError as exc:
                raise StorageError(
                    f"cannot migrate the database schema: {exc} (was it written by a newer version of hearth?)",
                    original=exc,
                ) from exc
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StorageError(f"migration left {len(broken)} rows with a dangling foreign key; rolled back")
    finally:
        if sqlite:
            _pragma(connection, "PRAGMA foreign_keys=ON")


async def upgrade(engine: AsyncEngine, revision: str = "head", config: Config | None = None) -> None:
    """Upgrade without blocking the event loop: the driver's I/O runs under ``run_sync``."""
    async with engine.connect() as connection:
        await connection.run_sync(upgrade_connection, revision, config)


def _pragma(connection: Connection, sql: str) -> None:
    """Run on the DBAPI connection: through SQLAlchemy it would open a transaction first,
    and SQLite ignores ``foreign_keys`` inside one."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()
