"""The bad-input corpus through the terminal chat, piped exactly as a script would pipe it.

One ``bot.py chat`` session: trigger off (so the corpus is stored without twenty model
replies), every classic line including raw invalid UTF-8 bytes, every hostile command, then
trigger back on and the 200 KB line addressed to the bot, which must be trimmed to the
context and answered. Afterwards: no traceback anywhere, the bot still answered ``/stats``
with its model loaded, ``memory export`` holds every line, and SQLite's integrity check is ok.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.bad_input_corpus import BAD_COMMANDS, CLASSIC, INVALID_UTF8_BYTES, LINE_200KB, stored_form
from tests.conftest import ROOT, run_bot

CRASH_LINE = "failed unexpectedly"


def console_lines() -> list[bytes]:
    """The classic corpus as console lines: one message per line, raw bytes for invalid UTF-8."""
    lines = []
    for name, text in CLASSIC.items():
        if name == "surrogates":
            lines.append(INVALID_UTF8_BYTES)  # a terminal or pipe gives bytes, not surrogates
        else:
            lines.append(text.replace("\n", " ").encode("utf-8"))
    return lines


def test_bad_input_corpus_through_the_console(config_file, smol_path, tmp_path: Path):
    config = config_file()  # a small window: the 200 KB line must be cut to it, and that is quick to evaluate
    config.write_text(config.read_text().replace("  n_threads: 2\n", "  n_threads: 2\n  n_ctx: 512\n"))
    messages = console_lines()
    script = b"\n".join(
        [
            b"/settings set trigger off",
            b"/settings set max_tokens 16",
            *messages,
            *(b"/" + command.encode() for command in BAD_COMMANDS),
            b"/settings set trigger mention",
            LINE_200KB.encode(),
            b"/stats",
        ]
    )
    # strict decoding, as Python reads a pipe under an ordinary UTF-8 desktop locale
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "chat", "--config", str(config)],
        input=script + b"\n",
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    out = result.stdout.decode("utf-8", "replace")
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, err[-2000:]
    for stream in (out, err):
        assert "Traceback" not in stream, stream[-3000:]
        assert CRASH_LINE not in stream, stream[-3000:]

    lines = out.splitlines()
    assert lines[:2] == ["trigger set to off", "max_tokens set to 16"]
    # every hostile command got an answer on one line, then the bot answered the 200 KB line
    mention = lines.index("trigger set to mention")
    command_answers = lines[2:mention]
    assert len(command_answers) == len(BAD_COMMANDS), command_answers
    reply = lines[mention + 1]
    assert reply.strip() and not reply.startswith("error"), reply
    assert "model: smollm2-135m-instruct" in lines[mention + 2 :], "the bot did not answer /stats with its model"

    exported = run_bot("memory", "export", "--config", str(config), "--room", "console")
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert document["settings"]["persona"] is None, "a hostile 'persona set' changed the room"
    assert not document["settings"]["extra"].get("lore"), "a refused 'lore add' was stored"
    user_texts = [m["text"] for m in document["messages"] if m["role"] == "user"]
    expected = [stored_form(line.decode("utf-8", "replace")) for line in messages] + [LINE_200KB]
    assert len(user_texts) == len(expected)
    for got, want in zip(user_texts, expected, strict=True):
        assert got == want, (got[:120], want[:120])
    assert document["messages"][-1]["role"] == "assistant"

    with sqlite3.connect(tmp_path / "hearth.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
