"""Leases between real OS processes on one database: SQLite rows with expiry, PostgreSQL advisory locks."""

from __future__ import annotations

import asyncio
import time

import pytest

from errors import StorageError
from memory import MemoryStore
from memory.leases import Leases, advisory_key
from tests.memory.lease_holder import Holder, ask

ACCOUNT = "matrix:@bot:example.org"

async def test_a_second_process_does_not_get_the_account_the_first_one_holds(db_url):
    first = Holder(db_url)
    try:
        assert first.answer() == "HELD"
        assert ask(db_url) == "REFUSED", "two processes would answer every message twice"
        assert ask(db_url, name="discord:123:shard:1") == "HELD", "another account is free to take"
        assert first.finish() == "RELEASED"
    finally:
        first.proc.kill()
    assert ask(db_url) == "HELD", "a clean shutdown releases the account at once"


async def test_on_sqlite_a_crashed_process_lease_lapses_after_its_ttl(sqlite_url):
    """A holder from another host (the pid cannot be checked) lapses only by expiry."""
    await _migrated(sqlite_url)
    ttl = 5.0  # room for a Python process to start on a busy machine before the row lapses
    crashed = Holder(sqlite_url, ttl=ttl, holder="another-host:4242:cafe")
    assert crashed.answer() == "HELD"
    killed_at = time.monotonic()
    crashed.kill()  # no release: the row stays behind
    assert ask(sqlite_url) == "REFUSED", "the row is still within its ttl"
    await asyncio.sleep(max(0.0, ttl - (time.monotonic() - killed_at)) + 0.3)
    assert ask(sqlite_url) == "HELD", "the dead process's lease lapsed"


async def test_on_sqlite_a_crashed_process_on_this_host_is_taken_over_at_once(sqlite_url):
    """A service manager restarting a crashed bot must not wait out the ttl: that pid is gone."""
    await _migrated(sqlite_url)
    crashed = Holder(sqlite_url, ttl=30.0)
    assert crashed.answer() == "HELD"
    crashed.kill()
    assert ask(sqlite_url) == "HELD"


async def test_on_postgresql_a_crashed_process_lease_ends_with_its_session(pg_url):
    await _migrated(pg_url)
    crashed = Holder(pg_url)
    assert crashed.answer() == "HELD"
    crashed.kill()
    deadline = time.monotonic() + 10  # the server notices the closed socket almost at once
    while True:
        answer = ask(pg_url)
        if answer == "HELD" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert answer == "HELD"


async def test_the_heartbeat_keeps_a_sqlite_lease_alive_past_its_ttl(sqlite_url):
    await _migrated(sqlite_url)
    mine, theirs = Leases(sqlite_url, ttl=0.6), Leases(sqlite_url, ttl=0.6)
    await mine.start()
    await theirs.start()
    try:
        assert await mine.acquire(ACCOUNT)
        await asyncio.sleep(1.5)  # two and a half ttls: only renewals keep it
        assert not await theirs.acquire(ACCOUNT)
        assert mine.held == {ACCOUNT}
    finally:
        await mine.close()
        await theirs.close()


async def test_a_lease_taken_away_is_reported_lost(sqlite_url):
    await _migrated(sqlite_url)
    lost: list[str] = []
    mine = Leases(sqlite_url, ttl=0.6, on_lost=lost.append)
    await mine.start()
    try:
        assert await mine.acquire(ACCOUNT)
        store = MemoryStore(sqlite_url)
        await store.start()
        try:
            async with store.engine.begin() as conn:  # someone else's row now (a stall let it lapse, say)
                await conn.exec_driver_sql("UPDATE leases SET holder = 'another process'")
        finally:
            await store.close()
        await asyncio.sleep(0.6)
        assert lost == [ACCOUNT] and mine.held == frozenset()
    finally:
        await mine.close()


async def test_in_memory_sqlite_grants_every_lease_and_acquire_is_idempotent():
    leases = Leases("sqlite+aiosqlite://")
    with pytest.raises(StorageError, match="not started"):
        await leases.acquire(ACCOUNT)
    await leases.start()
    assert await leases.acquire(ACCOUNT) and await leases.acquire(ACCOUNT)
    await leases.close()
    await leases.close()


def test_advisory_keys_are_stable_signed_64_bit():
    assert advisory_key(ACCOUNT) == advisory_key(ACCOUNT) != advisory_key("discord:1:shard:0")
    assert -(2**63) <= advisory_key(ACCOUNT) < 2**63


async def _migrated(url: str) -> None:
    store = MemoryStore(url)
    await store.start()
    await store.close()
