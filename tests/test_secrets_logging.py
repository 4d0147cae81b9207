"""No secret reaches the logs, even at DEBUG, where libraries log requests and SQL parameters.

The redaction filter is pure policy (tested directly); the Discord test runs the real
``bot.py run`` with ``logging.level: DEBUG`` and its token from the environment, and greps
everything the process wrote. (There is no network here, so the login fails: one line, exit 1.)
"""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import quote

from log_redaction import MASK, SecretRedactor
from tests.conftest import run_bot

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.not-a-real-discord-token_0123456789"


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("nio", logging.DEBUG, __file__, 1, message, args, exc_info)


def _shown(redactor: SecretRedactor, record: logging.LogRecord) -> str:
    assert redactor.filter(record) is True, "a record is masked, never dropped"
    return logging.Formatter("%(message)s").format(record)


def test_known_secrets_are_masked_raw_escaped_and_url_encoded():
    secret = 'pa ss"wo/rd&1'
    redactor = SecretRedactor([secret])
    for spelled in (secret, json.dumps(secret)[1:-1], quote(secret, safe="")):
        text = _shown(redactor, _record("sending %s to the server", spelled))
        assert spelled not in text and MASK in text, text


def test_a_live_token_is_masked_from_the_moment_it_exists():
    holder = {"token": None}
    redactor = SecretRedactor()
    redactor.watch(lambda: holder["token"])
    assert _shown(redactor, _record("before login: %s", "syt_later")) == "before login: syt_later"
    holder["token"] = "syt_aGVhcnRo_live0123456789"
    text = _shown(redactor, _record("executing partial(execute, %r)", ("matrix", holder["token"])))
    assert holder["token"] not in text


def test_labelled_values_and_tracebacks_are_masked():
    redactor = SecretRedactor(["sekrit-password"])
    url = _shown(redactor, _record("GET /_matrix/client/v3/sync?since=s1&access_token=syt_unknown_0123"))
    assert "syt_unknown_0123" not in url and "since=s1" in url
    body = _shown(redactor, _record('POST login {"type": "m.login.password", "password": "other-pass"}'))
    assert "other-pass" not in body and "m.login.password" in body
    try:
        raise ValueError("login with sekrit-password failed")
    except ValueError as exc:
        text = _shown(redactor, _record("crashed", exc=exc))
    assert "Traceback" in text and "sekrit-password" not in text


def test_short_values_are_not_treated_as_secrets():
    """A 3-character value would mask ordinary words everywhere; config validation is the place for those."""
    redactor = SecretRedactor(["abc"])
    assert _shown(redactor, _record("abcdef")) == "abcdef"


def test_discord_token_never_reaches_a_debug_log(config_file, tmp_path):
    config = config_file(
        'logging:\n  level: DEBUG\ndiscord:\n  enabled: true\n  token: "${HEARTH_TEST_DISCORD_TOKEN}"\n'
    )
    env = {**os.environ, "HEARTH_TEST_DISCORD_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    result = run_bot("run", "--config", str(config), env=env)
    output = result.stdout + result.stderr
    assert " DEBUG " in output, "logging.level: DEBUG was not honoured, so this test shows nothing"
    assert TOKEN not in output and quote(TOKEN, safe="") not in output
    assert result.returncode in (0, 1), output[-3000:]
    if result.returncode == 1:  # no network: one line saying so
        assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr[-2000:]


