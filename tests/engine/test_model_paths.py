"""``model load`` from chat names registered models only; the console keeps paths.

Real files on a real filesystem: symlinks, a FIFO and paths that climb out of models_dir.
Every refusal must read the same whether or not the file exists, so chat cannot probe the host.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.registry import ModelRegistry
from engine.settings import ConfiguredModel, ModelSettings
from errors import ModelError


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    models = tmp_path / "models"
    models.mkdir()
    (models / "good.gguf").write_bytes(b"GGUF")
    (models / "alias.gguf").symlink_to(models / "good.gguf")  # a link that stays inside is fine
    (models / "escape.gguf").symlink_to("/etc/passwd")
    (models / "device.gguf").symlink_to("/dev/zero")
    os.mkfifo(models / "pipe.gguf")
    outside = tmp_path / "outside.gguf"
    outside.write_bytes(b"GGUF")
    configured = ConfiguredModel("ops-choice", outside)  # an operator named it in the config
    return ModelRegistry(ModelSettings(models_dir=models, models=(configured,)))


def refusal(registry: ModelRegistry, name: str) -> str:
    with pytest.raises(ModelError) as caught:
        registry.resolve(name, paths=False)
    return str(caught.value).replace(repr(name), "NAME")


def test_chat_takes_registered_models_inside_models_dir(registry: ModelRegistry):
    assert registry.resolve("good", paths=False).name == "good"
    assert registry.resolve("alias", paths=False).name == "alias"
    assert registry.resolve("ops-choice", paths=False).name == "ops-choice"


def test_every_refusal_is_the_same_whether_or_not_the_file_exists(registry: ModelRegistry, tmp_path: Path):
    names = [
        "escape", "device", "pipe",  # registered by the folder scan, but not regular files inside it
        str(tmp_path / "outside.gguf"), str(tmp_path / "missing.gguf"),
        "/etc/passwd", "/dev/zero", "../outside.gguf", "../../etc/passwd", "models/../outside.gguf",
    ]  # fmt: skip
    refusals = {refusal(registry, name) for name in names}
    assert len(refusals) == 1, refusals
    (text,) = refusals
    assert text.startswith("unknown model NAME; available:")
    listed = text.split("available:")[1]
    assert "good" in listed and "ops-choice" in listed
    assert "escape" not in listed and "pipe" not in listed and "device" not in listed


def test_the_console_keeps_paths(registry: ModelRegistry, tmp_path: Path):
    assert registry.resolve(str(tmp_path / "outside.gguf")).path == tmp_path / "outside.gguf"
    assert registry.resolve("escape").name == "escape"
