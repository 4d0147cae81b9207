"""Shared fixtures: the real SillyTavern files live in the sibling ``shared/`` folder, never in the repo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def cards_dir(fixtures_dir: Path) -> Path:
    """The suite-wide fixture locates ../shared/fixtures/cards and skips when it is absent."""
    return fixtures_dir


@pytest.fixture
def seraphina_png(cards_dir: Path) -> Path:
    path = cards_dir / "Seraphina.png"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture
def eldoria_json(cards_dir: Path) -> dict[str, Any]:
    path = cards_dir / "Eldoria.worldinfo.json"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def count_words():
    """A stand-in tokenizer for budget tests: one token per whitespace-separated word."""
    return lambda text: len(text.split())
