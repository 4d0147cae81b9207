"""Memory tests run on a real SQLite file in tmp_path; nothing is mocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory import MemoryStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "hearth.db"  # a missing folder: the store must create it


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite+aiosqlite:///{db_path}"


@pytest.fixture
async def store(db_url: str):
    s = MemoryStore(db_url)
    await s.start()
    yield s
    await s.close()
