"""A separate OS process that holds one lease: what a second bot process on the same database sees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from memory import MemoryStore
from memory.leases import Leases

async def main():
    store = MemoryStore({url!r})
    await store.start()  # migrates: the leases table
    leases = Leases({url!r}, ttl={ttl}, holder={holder!r})
    await leases.start()
    print("HELD" if await leases.acquire({name!r}) else "REFUSED", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # hold until told to go
    await leases.close()
    await store.close()
    print("RELEASED", flush=True)

asyncio.run(main())
"""


class Holder:
    """A separate Python process that takes one lease and holds it until ``finish`` or ``kill``."""

    def __init__(
        self, url: str, name: str = "matrix:@bot:example.org", ttl: float = 30.0, holder: str | None = None
    ) -> None:
        script = HOLDER.format(root=str(ROOT), url=url, name=name, ttl=ttl, holder=holder)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def answer(self) -> str:
        line = self.proc.stdout.readline().strip()
        if not line:
            raise AssertionError(f"the holder died: {self.proc.stderr.read()[-2000:]}")
        return line

    def finish(self) -> str:
        out, err = self.proc.communicate("\n", timeout=60)
        assert self.proc.returncode == 0, err[-2000:]
        return out.strip()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=60)


def ask(url: str, name: str = "matrix:@bot:example.org") -> str:
    """Start a process that tries to take ``name``, let it go again at once; HELD or REFUSED."""
    holder = Holder(url, name=name)
    try:
        return holder.answer()
    finally:
        holder.finish()
