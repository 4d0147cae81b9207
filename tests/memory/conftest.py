"""Memory tests run on real databases: a SQLite file in tmp_path, and a throwaway PostgreSQL cluster.

``db_url`` and ``store`` are parametrised over both backends. A test about the SQLite file
itself asks for ``sqlite_url`` / ``db_path`` instead. When PostgreSQL is missing or cannot
start, its variants skip with one reason line.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from memory import MemoryStore
from tests.memory.postgres import Cluster, Unavailable, start_cluster

BACKENDS = ("sqlite", "postgresql")
_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster | Unavailable]:
    """Started once, on first use; stopped at the end of the session."""
    try:
        cluster = start_cluster()
    except Unavailable as exc:
        yield exc
        return
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster | Unavailable) -> str:
    """A fresh, empty database on the cluster, one per test."""
    if isinstance(pg_cluster, Unavailable):
        pytest.skip(str(pg_cluster))
    return pg_cluster.create_database(f"t{next(_database_numbers)}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "hearth.db"  # a missing folder: the store must create it


@pytest.fixture
def sqlite_url(db_path: Path) -> str:
    return f"sqlite+aiosqlite:///{db_path}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")


@pytest.fixture
async def store(db_url: str):
    s = MemoryStore(db_url)
    await s.start()
    yield s
    await s.close()
