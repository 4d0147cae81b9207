"""Alembic environment: hearth runs migrations in-process on the store's own connection.

``memory.migrate`` passes a live connection in ``config.attributes["connection"]``.
A URL in ``sqlalchemy.url`` works too, sync or async (e.g. ``sqlite+aiosqlite:///...``),
and so does offline ``--sql`` mode, so the scripts can also be driven from the alembic CLI.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from memory.schema import Base

config = context.config


def run_on(connection: Connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things, so alembic rebuilds the table.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_on)
    finally:
        await engine.dispose()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic needs sqlalchemy.url or a connection (memory.migrate passes one)")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    elif make_url(url).get_dialect().is_async:
        asyncio.run(run_async(url))
    else:
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                run_on(connection)
        finally:
            engine.dispose()


run()
