"""The terminal chat, driven exactly as a user or a script would drive it."""

from __future__ import annotations

from tests.conftest import run_bot


def test_piped_chat_replies_and_lists_models(config_file, smol_path):
    result = run_bot("chat", "--config", str(config_file()), stdin="Hello, who are you?\n/model list\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines and lines[0].strip(), "the first line must be the model's reply"
    assert "smollm2-135m-instruct" in result.stdout
    assert "gemma-3-270m" in result.stdout


def test_second_run_continues_the_room(config_file, smol_path):
    config = str(config_file())
    first = run_bot("chat", "--config", config, "--room", "r1", stdin="My name is Zorbulon.\n")
    assert first.returncode == 0, first.stderr
    result = run_bot("memory", "export", "--config", config, "--room", "r1")
    assert result.returncode == 0, result.stderr
    assert "Zorbulon" in result.stdout
    second = run_bot("chat", "--config", config, "--room", "r1", stdin="/persona list\n")
    assert second.returncode == 0
    assert "assistant" in second.stdout


def test_unknown_persona_is_one_line(config_file, smol_path):
    result = run_bot("chat", "--config", str(config_file()), "--persona", "nobody", stdin="hi\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "nobody" in result.stderr


def test_models_list_without_loading(config_file):
    result = run_bot("models", "list", "--config", str(config_file()))
    assert result.returncode == 0
    assert "Q4_1" in result.stdout and "gemma3" in result.stdout


def test_run_without_adapters_is_one_clear_line(config_file):
    result = run_bot("run", "--config", str(config_file()))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no adapter is enabled" in result.stderr


def test_regenerate_on_the_console_shows_the_new_reply(config_file, smol_path):
    """``/regenerate`` prints its notice, then the new reply itself (it used to print only the notice)."""
    config = str(config_file())
    result = run_bot("chat", "--config", config, "--room", "regen", stdin="Name a fruit.\n/regenerate\n/model list\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    first, marker, rest = result.stdout.partition("regenerating…\n")
    assert first.strip() and marker, result.stdout
    second, _, table = rest.partition("   name ")
    assert second.strip() and not second.startswith(("error", "⚠️")), "the new reply must follow the notice"
    assert "smollm2-135m-instruct" in table, "the table after it keeps its aligned header"
    stored = run_bot("memory", "export", "--config", config, "--room", "regen")
    assert second.strip()[:40] in stored.stdout, "the shown reply is the stored one"
