"""Engine policy fixtures: a real App (SQLite store, PersonaLibrary, commands) over a FakeBackend.

Rights, rate limits, triggers, scheduling and settings commands do not need the model's words,
so these tests skip loading the GGUF: ``ModelHost.factory`` builds a FakeBackend instead.
Tests of generation, token counts, prompt assembly or KV reuse keep the real ``app`` fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from engine.fake_backend import FakeBackend
from tests.conftest import MODELS

FakeApp = Callable[..., Awaitable[tuple[Any, FakeBackend]]]


@pytest_asyncio.fixture
async def fake_apps(tmp_path: Path) -> AsyncIterator[FakeApp]:
    """``await fake_apps(limits=..., clock=..., max_concurrent=...)``: a started App and its FakeBackend.

    Nothing is queued on the backend: a test enqueues each reply the policy under test allows.
    """
    from bot import App
    from config import HearthConfig

    started: list[Any] = []

    async def make(
        *, limits: dict | None = None, clock: Callable[[], float] | None = None, max_concurrent: int = 1
    ) -> tuple[Any, FakeBackend]:
        raw: dict[str, Any] = {
            "model": {"models_dir": str(MODELS)},
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"},
            "personas": {"dir": str(tmp_path / "personas")},
        }
        if limits is not None:
            raw["limits"] = limits
        application = App.build(HearthConfig.model_validate(raw))
        backend = FakeBackend(max_concurrent=max_concurrent)
        application.host.factory = lambda entry, spec: backend
        if clock is not None:
            application.conversation.clock = clock
        backend.enqueue(["Hi"])  # the load's health check
        await application.start()
        started.append(application)
        backend.history.clear()
        return application, backend

    yield make
    for application in started:
        await application.close()


@pytest_asyncio.fixture
async def fake_app(fake_apps: FakeApp) -> tuple[Any, FakeBackend]:
    """A started App over a FakeBackend, default limits; returns ``(app, backend)``."""
    return await fake_apps()
