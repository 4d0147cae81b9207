"""SIGTERM ends ``bot.py run`` within a few seconds while Matrix is still trying to connect.

nio retries an unreachable homeserver by itself, and start-up used to wait for it (about 40 s)
before the signal was even looked at. The homeserver here is on loopback: a port where nothing
listens (connections refused), or a socket that accepts and never answers (requests hang).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

CONNECTING = "matrix: connecting to"
EXIT_BOUND_S = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["refused", "silent"])
def homeserver(request: pytest.FixtureRequest) -> Iterator[str]:
    """A loopback URL that never answers Matrix: nothing listening, or a listener that never replies."""
    if request.param == "refused":
        yield f"http://127.0.0.1:{_free_port()}"
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # the kernel completes connections; nobody ever reads or answers them
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _wait_for(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in the bot's log:\n{path.read_text(errors='replace')[-3000:]}")


def test_sigterm_while_matrix_connects_exits_quickly(config_file, homeserver: str, tmp_path: Path, smol_path):
    config = config_file(
        "matrix:\n  enabled: true\n"
        f"  homeserver: {homeserver}\n"
        '  user_id: "@hearth:localhost"\n'
        '  password: "${HEARTH_TEST_PASSWORD}"\n'
        f"  store_dir: {tmp_path}/matrix\n"
    )
    log = tmp_path / "bot.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "bot.py"), "run", "--config", str(config)],
            cwd=ROOT,
            stdout=handle,
            stderr=handle,
            env={**os.environ, "HEARTH_TEST_PASSWORD": "not-a-real-password", "PYTHONUNBUFFERED": "1"},
        )
    try:
        _wait_for(log, CONNECTING, process, timeout=120)
        time.sleep(1.0)  # let nio reach its retry loop (refused) or its hanging request (silent)
        assert process.poll() is None, f"the bot stopped before the signal:\n{log.read_text()[-3000:]}"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {EXIT_BOUND_S} s after SIGTERM:\n{log.read_text()[-3000:]}") from None
        output = log.read_text(errors="replace")
        assert code == 0, f"exit code {code}:\n{output[-3000:]}"
        assert "Traceback" not in output, output[-3000:]
        assert "shutting down" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
