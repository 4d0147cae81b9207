"""`bot.py check` names the bad key, one line each, never a traceback."""

from __future__ import annotations

import pytest

from config import ConfigErrors, load_config
from tests.conftest import run_bot


def check(config_file, extra: str, env: dict | None = None):
    path = config_file(extra)
    result = run_bot("check", "--config", str(path), env=env)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_valid_config_passes(config_file):
    result = check(config_file, "")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_wrong_type_names_the_key(config_file):
    result = check(config_file, "engine:\n  max_queue: lots\n")
    assert result.returncode == 1
    assert "engine.max_queue:" in result.stderr


def test_range_names_the_key_and_bound(config_file):
    path = config_file("")
    path.write_text(path.read_text().replace("n_threads: 2", "n_threads: 2\n  n_ctx: 100"))
    result = run_bot("check", "--config", str(path))
    assert result.returncode == 1
    assert "model.n_ctx: must be >= 256" in result.stderr


def test_unknown_key_is_named(config_file):
    result = check(config_file, "discord:\n  tokne: abc\n")
    assert result.returncode == 1
    assert "discord.tokne: unknown key" in result.stderr


def test_missing_env_var_is_named(config_file):
    import os

    env = {k: v for k, v in os.environ.items() if k != "HEARTH_TEST_TOKEN"}
    result = check(config_file, "discord:\n  token: ${HEARTH_TEST_TOKEN}\n", env=env)
    assert result.returncode == 1
    assert "discord.token: environment variable HEARTH_TEST_TOKEN is not set" in result.stderr


def test_missing_model_file_is_named(config_file, tmp_path):
    path = config_file("")
    missing = f"n_threads: 2\n  default: {tmp_path}/nope.gguf"
    path.write_text(path.read_text().replace("n_threads: 2", missing))
    result = run_bot("check", "--config", str(path))
    assert result.returncode == 1
    assert "model.default:" in result.stdout and "does not exist" in result.stdout


def test_secret_values_are_never_printed(config_file):
    result = check(config_file, "discord:\n  token: [s3cr3t-value]\n")
    assert result.returncode == 1
    assert "discord.token" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout


def test_env_substitution_reads_the_environment(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("discord:\n  token: ${TOKEN_X}\n")
    config = load_config(path, env={"TOKEN_X": "abc"})
    assert config.discord.token.get_secret_value() == "abc"
    assert "abc" not in repr(config.discord)


def test_duplicate_keys_and_bad_yaml_are_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  max_queue: 3\n  max_queue: 4\n")
    with pytest.raises(ConfigErrors, match="duplicate key 'max_queue'"):
        load_config(path)
    path.write_text("engine: [unclosed\n")
    with pytest.raises(ConfigErrors, match="invalid YAML"):
        load_config(path)


def test_no_config_file_uses_defaults():
    config = load_config(None)
    assert config.model.n_ctx == 2048
    assert config.matrix.command_prefix == "!hearth"
    assert config.database.url == "sqlite+aiosqlite:///data/hearth.db"


def test_example_config_documents_valid_keys():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "config.example.yaml"
    config = load_config(example, env={})
    assert config.matrix.command_prefix == "!hearth"
    assert config.model.sampling.repeat_penalty == 1.15


def test_a_persona_preferring_an_unknown_model_is_named(config_file, tmp_path):
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "ghost.yaml").write_text("name: Ghost\nsystem_prompt: You haunt the hall.\nmodel: no-such-model\n")
    result = check(config_file, "")
    assert result.returncode == 1
    assert "prefers model 'no-such-model'" in result.stdout, result.stdout


def test_per_model_sampling_overrides_are_checked_at_start(tmp_path):
    """A per-model override out of range would fail every turn; it fails at load instead."""
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  models:\n    - name: x\n      path: x.gguf\n      sampling: {top_p: 0, typo: 1}\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    text = str(info.value)
    assert "model.models.0.sampling.top_p: must be in (0, 1] (got 0)" in text, text


def test_limits_and_edit_caps_are_config_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "limits:\n  user_messages_per_minute: 6\n  user_burst: 2\n  room_replies_per_minute: 0\n"
        "discord:\n  max_edits: 10\nmatrix:\n  max_edits: 12\n"
    )
    config = load_config(path)
    limits = config.engine_settings().limits
    assert (limits.user_messages_per_minute, limits.user_burst, limits.room_replies_per_minute) == (6, 2, 0)
    assert (config.discord.max_edits, config.matrix.max_edits) == (10, 12)


def test_model_options_pass_whole_from_config_to_the_spec(tmp_path):
    """Every load option has a ``model.*`` key, and reaches the spec with per-model overrides applied."""
    from dataclasses import fields, replace

    from config import HearthConfig, ModelConfig
    from engine.registry import ModelRegistry
    from engine.settings import ModelOptions

    assert {f.name for f in fields(ModelOptions)} <= set(ModelConfig.model_fields)
    model = {
        "models_dir": str(tmp_path),
        "n_ubatch": 64,
        "flash_prefill_min_tokens": 7,
        "state_cache_dir": str(tmp_path),
        "parallel": 3,
        "models": [{"name": "Big", "path": str(tmp_path / "big.gguf"), "n_ctx": 4096, "chat_format": "gemma"}],
    }
    registry = ModelRegistry(HearthConfig.model_validate({"model": model}).engine_settings().model)
    expected = ModelOptions(n_ubatch=64, flash_prefill_min_tokens=7, state_cache_dir=tmp_path, parallel=3)
    big = registry.spec_for(registry.resolve("big")).options
    assert big == replace(expected, n_ctx=4096, chat_format="gemma")
    assert registry.spec_for(registry.resolve(str(tmp_path / "other.gguf"))).options == expected


def test_state_cache_spills_under_the_data_folder_by_default():
    """The first reply after a restart is warm out of the box; ``null`` keeps states in RAM only."""
    from pathlib import Path

    from config import HearthConfig

    assert HearthConfig.model_validate({}).engine_settings().model.options.state_cache_dir == Path("data/state_cache")
    ram_only = HearthConfig.model_validate({"model": {"state_cache_dir": None}})
    assert ram_only.engine_settings().model.options.state_cache_dir is None
