"""Fixtures for the Matrix tests: one real Synapse per session, and logged-in nio users on it.

`synapse` is a plain synchronous session fixture (subprocess + urllib), so it needs no session event
loop; user clients are async and function-scoped. A test may stop and start the server: the autouse
`_synapse_left_running` fixture starts it again afterwards, so later tests find it running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from .synapse import MatrixAccount, SynapseError, SynapseServer, synapse_available

if TYPE_CHECKING:
    from .bot import Bot

BotFactory = Callable[..., Awaitable["Bot"]]

_SERVER: SynapseServer | None = None


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """A running homeserver: `.url`, `.server_name`, `.register()`, `.stop()`, `.start()`, `.log_tail()`."""
    global _SERVER
    if not synapse_available():
        pytest.skip("matrix-synapse is not installed: `pip install -e '.[dev]'` (make test does this)")
    server = SynapseServer(tmp_path_factory.mktemp("synapse"))
    try:
        server.setup()
        server.start()
    except SynapseError as error:
        server.stop()
        pytest.fail(str(error), pytrace=False)
    _SERVER = server
    yield server
    _SERVER = None
    server.stop()


@pytest.fixture(autouse=True)
def _synapse_left_running() -> Iterator[None]:
    """After a test that stopped the homeserver, start it again (same port and data)."""
    yield
    if _SERVER is not None and not _SERVER.running:
        try:
            _SERVER.start()
        except SynapseError as error:
            pytest.fail(f"could not restart synapse after the test:\n{error}", pytrace=False)


@pytest.fixture
def matrix_account(synapse: SynapseServer) -> Callable[..., MatrixAccount]:
    """Factory: `matrix_account(prefix="user", admin=False)` registers a fresh unique user (no client)."""

    def make(prefix: str = "user", admin: bool = False) -> MatrixAccount:
        try:
            return synapse.register_account(prefix, admin=admin)
        except SynapseError as error:
            pytest.fail(f"registering a {prefix!r} user failed: {error}\n{synapse.log_tail()}", pytrace=False)

    return make


@pytest_asyncio.fixture
async def matrix_user(
    synapse: SynapseServer, matrix_account: Callable[..., MatrixAccount], tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable]]:
    """Factory: `await matrix_user(prefix="user", admin=False)` -> a logged-in, E2EE-ready nio AsyncClient.

    Each client has its own store dir, has uploaded its device keys and done a first sync; all are
    closed at teardown. The account is on `client.account` (a MatrixAccount, with the password).
    """
    from nio import AsyncClient, AsyncClientConfig

    from .harness import sync_once

    clients: list[AsyncClient] = []

    async def make(prefix: str = "user", admin: bool = False) -> AsyncClient:
        account = matrix_account(prefix, admin)
        store = tmp_path / "nio" / account.localpart
        store.mkdir(parents=True)
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=True,
            request_timeout=30,
            max_timeout_retry_wait_time=2,
        )
        client = AsyncClient(synapse.url, account.user_id, store_path=str(store), config=config)
        clients.append(client)
        client.restore_login(account.user_id, account.device_id, account.access_token)
        client.account = account  # type: ignore[attr-defined]
        if client.should_upload_keys:
            await client.keys_upload()
        await sync_once(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def matrix_bot(
    synapse: SynapseServer, matrix_account: Callable[..., MatrixAccount], tmp_path: Path, smol_path: Path
) -> AsyncIterator[BotFactory]:
    """Factory: ``await matrix_bot(**matrix_settings)`` starts a bot on a fresh account (real model).

    ``personas={"key": yaml_text}`` puts persona files in the bot's personas dir before it starts.
    """
    from .bot import bot_config, start_bot

    bots: list[Bot] = []

    async def make(*, with_token: bool = False, personas: dict[str, str] | None = None, **matrix: Any) -> Bot:
        account = matrix_account("hearth")
        data = tmp_path / f"bot{len(bots)}"
        data.mkdir()
        for key, text in (personas or {}).items():
            (data / "personas").mkdir(exist_ok=True)
            (data / "personas" / f"{key}.yaml").write_text(text)
        if with_token:  # log in with matrix.access_token instead of a password
            matrix = {"password": None, "access_token": account.access_token, **matrix}
        bot = await start_bot(bot_config(synapse, account, data, **matrix))
        bot.account = account
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        await bot.close()
