"""Shared fixtures: the real default model, temp data dirs, and a running engine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SMOL = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = MODELS / "gemma-3-270m-q4_k_m.gguf"
FIXTURES = ROOT.parent / "shared" / "fixtures" / "cards"


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path.name} is missing: run `make test` (it pulls the models) or `python bot.py models pull`")
    return path


@pytest.fixture
def smol_path() -> Path:
    return _require(SMOL)


@pytest.fixture
def gemma_path() -> Path:
    return _require(GEMMA)


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real card fixtures are not available at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def config_file(tmp_path: Path):
    """Write a config into tmp_path whose data lives there too; returns a writer."""

    def write(extra: str = "") -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(
            f"model:\n  models_dir: {MODELS}\n  n_threads: 2\n  state_cache_dir: {tmp_path}/state_cache\n"
            f"database:\n  url: sqlite+aiosqlite:///{tmp_path}/hearth.db\n"
            f"personas:\n  dir: {tmp_path}/personas\n" + extra
        )
        return path

    return write


def run_bot(*args: str, stdin: str = "", cwd: Path = ROOT, env: dict | None = None):
    import subprocess

    return subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=240,
    )


@pytest_asyncio.fixture
async def app(tmp_path: Path, smol_path: Path):
    """A started App on the real default model with a temp database."""
    from bot import App
    from config import HearthConfig

    config = HearthConfig.model_validate(
        {
            "model": {
                "models_dir": str(MODELS),
                "n_threads": 2,
                "sampling": {"max_tokens": 48},
                "state_cache_dir": str(tmp_path / "state_cache"),
            },
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"},
            "personas": {"dir": str(tmp_path / "personas")},
        }
    )
    application = App.build(config)
    await application.start()
    yield application
    await application.close()
