"""Alembic environment: hearth runs migrations in-process on the store's own connection.

``MemoryStore.start()`` passes a live connection in ``config.attributes["connection"]``;
a sync URL in ``sqlalchemy.url`` works too (tests use it to build old schemas).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
