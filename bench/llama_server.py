"""A real OpenAI-compatible server for tests/remote and bench.remote: ``python -m llama_cpp.server``.

It runs the bundled SmolLM2 on a free loopback port. ``start`` waits until ``/v1/models``
answers, ``kill`` ends it at once (a crash, as a test of a server dying mid-reply sees it),
and ``start`` again on the same port brings it back.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One ``llama_cpp.server`` process; ``url`` is its ``/v1`` base."""

    def __init__(self, model: Path, log_dir: Path, *, api_key: str | None = None) -> None:
        self.model = model
        self.port = free_port()
        self.api_key = api_key
        self.log_path = log_dir / f"llama-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        args = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model)]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "2"]
        args += ["--chat_format", "chatml"]
        if self.api_key:
            args += ["--api_key", self.api_key]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", headers=headers, timeout=2).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama_cpp.server did not answer within {STARTUP_TIMEOUT_S:.0f} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
