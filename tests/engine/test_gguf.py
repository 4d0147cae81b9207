"""A bad model file is one clear error line, never a crash."""

from __future__ import annotations

import pytest

from engine.backend import ModelSpec
from engine.gguf_meta import read_gguf_info
from engine.llama_backend import LlamaBackend
from errors import ModelError
from tests.conftest import run_bot


def test_reads_real_metadata_without_loading(smol_path):
    info = read_gguf_info(smol_path)
    assert info.architecture == "llama"
    assert 130_000_000 < info.parameter_count < 140_000_000
    assert info.file_type == "Q4_1"
    assert info.context_length == 8192
    assert info.has_chat_template
    assert info.license == "apache-2.0"


def test_gemma_has_no_template(gemma_path):
    info = read_gguf_info(gemma_path)
    assert info.architecture == "gemma3"
    assert not info.has_chat_template


def test_truncated_file(tmp_path, smol_path):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(smol_path.read_bytes()[: 5_000_000])
    with pytest.raises(ModelError, match="truncated"):
        read_gguf_info(bad)


def test_not_gguf(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("this is not a model\n" * 100)
    with pytest.raises(ModelError, match="not a GGUF file"):
        read_gguf_info(bad)


async def test_backend_refuses_bad_file_with_one_line(tmp_path):
    bad = tmp_path / "empty.gguf"
    bad.write_bytes(b"GGUF")
    backend = LlamaBackend(ModelSpec("bad", bad))
    with pytest.raises(ModelError) as caught:
        await backend.load()
    assert "\n" not in str(caught.value)
    assert not backend.loaded


def test_chat_with_bad_model_prints_one_line(tmp_path, config_file):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    result = run_bot("chat", "--config", str(config_file()), "--model", str(bad), stdin="hi\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "broken.gguf" in lines[0]


@pytest.mark.parametrize("flash_attn", [False, True])
def test_ram_estimate_counts_the_prefill_contexts_kv_cache(smol_path, flash_attn):
    """The flash-attention prefill context has its own KV cache, unless the main one is flash already."""
    from engine.registry import ModelRegistry
    from engine.settings import ModelOptions, ModelSettings

    def estimate(prefill: bool) -> int:
        options = ModelOptions(n_ctx=4096, flash_attn=flash_attn, flash_prefill=prefill)
        settings = ModelSettings(models_dir=smol_path.parent, options=options)
        registry = ModelRegistry(settings)
        return registry.estimate_bytes(registry.resolve("smollm2-135m-instruct"))

    kv = read_gguf_info(smol_path).kv_cache_bytes(4096)
    assert 80 * 2**20 < kv < 110 * 2**20  # ~23 KB per token for SmolLM2
    assert estimate(True) - estimate(False) == (0 if flash_attn else kv)


def test_ram_estimate_counts_every_parallel_sequence(smol_path):
    """Batched, each of ``parallel`` sequences holds n_ctx cells, and the prefill context one more."""
    from engine.registry import ModelRegistry
    from engine.settings import BATCHED_TOKENIZER_CTX, ModelOptions, ModelSettings

    def estimate(parallel: int) -> int:
        settings = ModelSettings(models_dir=smol_path.parent, options=ModelOptions(n_ctx=2048, parallel=parallel))
        registry = ModelRegistry(settings)
        return registry.estimate_bytes(registry.resolve("smollm2-135m-instruct"))

    info = read_gguf_info(smol_path)
    kv, tokenizer_kv = info.kv_cache_bytes(2048), info.kv_cache_bytes(BATCHED_TOKENIZER_CTX)
    assert estimate(4) - estimate(1) == (4 + 1) * kv + tokenizer_kv - 2 * kv  # both have a prefill cache
    assert estimate(8) - estimate(4) == 4 * kv


def test_parallel_shrinks_to_the_sequences_that_fit_in_free_ram(smol_path):
    """``model.parallel`` is the most rooms at once: with less free RAM the model loads with
    fewer sequences (down to the plain path) instead of not at all."""
    from engine.registry import PARALLEL_RAM_SHARE, ModelRegistry
    from engine.settings import ModelOptions, ModelSettings

    settings = ModelSettings(models_dir=smol_path.parent, options=ModelOptions(n_ctx=2048, parallel=4))
    registry = ModelRegistry(settings)
    entry = registry.resolve("smollm2-135m-instruct")

    def loaded_with(available: int) -> int:
        return registry.spec_for(entry, available=available).options.parallel

    def room_for(parallel: int) -> int:
        return int(registry.estimate_bytes(entry, parallel=parallel) / PARALLEL_RAM_SHARE) + 1

    assert registry.spec_for(entry).options.parallel == 4, "RAM unknown: as configured"
    assert loaded_with(1 << 40) == 4
    assert loaded_with(room_for(4) - 2) == 3
    assert loaded_with(room_for(2)) == 2
    assert loaded_with(room_for(2) - 2) == 1
    assert registry.estimate_bytes(entry, available=room_for(3)) == registry.estimate_bytes(entry, parallel=3)
