"""Fixtures for the remote backend: a real ``llama_cpp.server`` on loopback, and apps that use it.

The session server is shared by every test that leaves it running; a test that kills its
server gets its own (``own_server``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from bench.llama_server import LlamaServer
from tests.conftest import MODELS, SMOL, _require

REMOTE_NAME = "big"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(_require(SMOL), tmp_path_factory.mktemp("llama-server")).start()
    yield server
    server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LlamaServer]:
    """A server this test may kill and bring back."""
    server = LlamaServer(_require(SMOL), tmp_path).start()
    yield server
    server.kill()


def remote_config(tmp_path: Path, url: str, *, default: str = REMOTE_NAME, **entry: object):
    """A validated config whose ``big`` model is the server at ``url``."""
    from config import HearthConfig

    model = {"name": REMOTE_NAME, "endpoint": url, "n_ctx": 2048, "max_concurrent": 2, **entry}
    return HearthConfig.model_validate(
        {
            "model": {
                "models_dir": str(MODELS),
                "n_threads": 2,
                "default": default,
                "sampling": {"max_tokens": 48},
                "state_cache_dir": str(tmp_path / "state_cache"),
                "models": [model],
            },
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"},
            "personas": {"dir": str(tmp_path / "personas")},
        }
    )


async def started_app(config):
    from bot import App

    app = App.build(config)
    await app.start()
    return app


@pytest_asyncio.fixture
async def remote_app(tmp_path: Path, llama_server: LlamaServer):
    """A started App whose model is the shared server."""
    app = await started_app(remote_config(tmp_path, llama_server.url))
    yield app
    await app.close()
