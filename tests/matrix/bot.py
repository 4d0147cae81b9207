"""Running hearth's Matrix bot against the test homeserver: in-process, or as a real `bot.py run`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adapters.matrix_adapter import MatrixAdapter
from bot import App
from config import HearthConfig
from engine.session_state import StoredSessionState

from .synapse import MatrixAccount, SynapseServer

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
READY_LINE = "hearth is running"


def bot_config(synapse: SynapseServer, account: MatrixAccount, data: Path, **matrix: Any) -> dict[str, Any]:
    """A whole hearth config: the real small model, data under ``data``, Matrix on the test server.

    One model thread: llama.cpp's threads spin while they wait, so on a 2-core machine a model
    using both cores starves the homeserver, and the two slow each other to a crawl.
    """
    return {
        "model": {
            "models_dir": str(MODELS),
            "n_threads": 1,
            "sampling": {"max_tokens": 32},
            "state_cache_dir": str(data / "state_cache"),
        },
        "database": {"url": f"sqlite+aiosqlite:///{data}/hearth.db"},
        "personas": {"dir": str(data / "personas")},
        "matrix": {
            "enabled": True,
            "homeserver": synapse.url,
            "user_id": account.user_id,
            "password": account.password,
            "store_dir": str(data / "matrix"),
            "edit_interval": 0.2,
            **matrix,
        },
    }


@dataclass
class Bot:
    """An in-process App with its MatrixAdapter started."""

    app: App
    adapter: MatrixAdapter
    account: MatrixAccount

    @property
    def user_id(self) -> str:
        return self.account.user_id

    async def close(self) -> None:
        await self.app.close()


async def start_bot(config: dict[str, Any]) -> Bot:
    parsed = HearthConfig.model_validate(config)
    app = App.build(parsed)
    await app.start()
    session = StoredSessionState(app.store, "matrix", parsed.matrix.user_id)
    adapter = MatrixAdapter(app.conversation, session, parsed.matrix)
    app.adapters.append(adapter)
    try:
        await adapter.start()
    except BaseException:
        await app.close()
        raise
    return Bot(app, adapter, MatrixAccount("", parsed.matrix.user_id, "", "", ""))


class BotProcess:
    """``python bot.py run --config FILE`` as a child process, started and stopped like a user would."""

    def __init__(self, config: dict[str, Any], data: Path) -> None:
        self.path = data / "config.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.log = data / "bot.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 90.0) -> None:
        starts = self._ready_count()
        handle = self.log.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bot.py"),
            "run",
            "--config",
            str(self.path),
            cwd=ROOT,
            stdout=handle,
            stderr=handle,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        handle.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._ready_count() <= starts:
            if self.process.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"the bot did not start:\n{self.tail()}")
            await asyncio.sleep(0.2)

    def _ready_count(self) -> int:
        return self.log.read_text(errors="replace").count(READY_LINE) if self.log.exists() else 0

    async def stop(self) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode or 0

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
