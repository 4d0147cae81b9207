"""Several bot processes on one database: each Matrix account and Discord shard is served by one of them.

The other process is a real OS process holding the lease; on the first test, ``bot.py run`` itself
is the second process.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import yaml

from adapters.discord_adapter import make_client
from bot import claim_account, discord_account, discord_shards
from config import ConfigErrors, DiscordConfig, HearthConfig, load_config
from memory import MemoryStore
from memory.leases import Leases
from tests.memory.lease_holder import ROOT, Holder

BOT_ID = "123456789012345678"
TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GxYzAb.not-a-real-signature"  # base64 of BOT_ID, then two more parts


async def migrated(url: str) -> None:
    store = MemoryStore(url)
    await store.start()
    await store.close()


async def test_bot_run_leaves_matrix_off_when_another_process_serves_the_account(db_url, tmp_path):
    await migrated(db_url)
    config = {
        "database": {"url": db_url},
        "personas": {"dir": str(tmp_path / "personas")},
        "logging": {"level": "INFO"},
        # nothing listens on port 9: had the bot started Matrix, it would hang retrying, not exit
        "matrix": {
            "enabled": True,
            "homeserver": "http://127.0.0.1:9",
            "user_id": "@bot:example.org",
            "password": "pw",
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    first = Holder(db_url, name="matrix:@bot:example.org")
    try:
        assert first.answer() == "HELD"
        second = subprocess.run(
            [sys.executable, "bot.py", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    finally:
        first.finish()
    lines = second.stderr.splitlines()
    assert second.returncode == 1, second.stderr[-2000:]
    said = [line for line in lines if "is served by another process" in line and "matrix account" in line]
    assert len(said) == 1, second.stderr[-2000:]
    assert said[0].endswith("matrix account @bot:example.org is served by another process; leaving Matrix off")
    assert lines[-1] == "error: every enabled adapter is served by another process; nothing left to run here"
    assert "Traceback" not in second.stderr


async def test_discord_processes_split_the_shards(db_url, caplog):
    await migrated(db_url)
    holder = Holder(db_url, name=f"discord:{BOT_ID}:shard:1")
    leases = Leases(db_url)
    try:
        assert holder.answer() == "HELD"
        await leases.start()
        config = HearthConfig(discord=DiscordConfig(enabled=True, token=TOKEN, shard_count=4))
        with caplog.at_level(logging.WARNING):
            assert await claim_account(leases, config, "discord")
        assert config.discord.shard_ids == [0, 2, 3], "this process serves the shards nobody else has"
        assert caplog.messages == [
            f"discord account {BOT_ID} shard 1 is served by another process; serving the others here"
        ]
        client = make_client(config.discord)
        assert client.shard_ids == [0, 2, 3] and client.shard_count == 4
        assert leases.held == {f"discord:{BOT_ID}:shard:{n}" for n in (0, 2, 3)}

        caplog.clear()
        only_one = HearthConfig(discord=DiscordConfig(enabled=True, token=TOKEN, shard_count=4, shard_ids=[1]))
        with caplog.at_level(logging.WARNING):
            assert not await claim_account(leases, only_one, "discord")
        assert caplog.messages == [
            f"discord account {BOT_ID} shard 1 is served by another process; leaving Discord off"
        ]
    finally:
        await leases.close()
        holder.finish()


def test_the_discord_account_comes_from_the_token_and_never_is_the_token():
    assert discord_account(TOKEN) == BOT_ID
    odd = discord_account("not base64 at all!")
    assert odd.startswith("token-") and "base64" not in odd
    assert discord_shards(DiscordConfig()) == [0], "one connection is shard 0"
    assert discord_shards(DiscordConfig(shard_count="auto")) == [0]
    assert discord_shards(DiscordConfig(shard_count=3)) == [0, 1, 2]
    assert discord_shards(DiscordConfig(shard_count=3, shard_ids=[2])) == [2]


@pytest.mark.parametrize(
    ("discord", "message"),
    [
        ({"shard_ids": [0, 1]}, "discord.shard_ids: needs a numeric shard_count"),
        ({"shard_ids": [0, 1], "shard_count": "auto"}, "discord.shard_ids: needs a numeric shard_count"),
        ({"shard_ids": [4], "shard_count": 4}, "discord.shard_ids: 4 is not a shard of 4 (0 to 3)"),
        ({"shard_ids": [1, 1], "shard_count": 4}, "discord.shard_ids: a shard is listed twice"),
        ({"shard_ids": [], "shard_count": 4}, "discord.shard_ids: must name at least one shard"),
        ({"shard_count": 0}, "discord.shard_count: must be >= 1 (got 0)"),
    ],
)
def test_bad_shard_settings_are_one_line_each(tmp_path, discord, message):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"discord": discord}))
    with pytest.raises(ConfigErrors) as caught:
        load_config(str(path))
    (only,) = caught.value.errors
    assert str(only).startswith(message)
