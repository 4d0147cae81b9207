"""Logging in to Matrix and keeping the session across restarts.

The device id, the access token a password login produced, and the sync token are kept
through the ``SessionState`` that ``bot.py`` gives the adapter (in the database). Reusing
the device keeps the E2EE key store valid and avoids a new "unknown session" for users on
every restart; resuming from the stored sync token means a restart neither answers old
messages again nor misses new ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nio import AsyncClient, AsyncClientConfig, LoginResponse, WhoamiResponse

from engine.types import SessionState
from errors import ConfigError, InternalError

log = logging.getLogger(__name__)

RETRY_WAIT_MAX_S = 10.0  # reconnect quickly after a homeserver restart, but never hammer it


def make_client(homeserver: str, user_id: str, store_dir: Path, encryption: bool) -> AsyncClient:
    """A nio client that retries forever on a lost connection, with a capped back-off."""
    config = AsyncClientConfig(
        encryption_enabled=encryption,
        store_sync_tokens=False,  # hearth keeps the sync token itself, in its database
        max_timeout_retry_wait_time=RETRY_WAIT_MAX_S,
        request_timeout=60,
    )
    store_path = ""
    if encryption:
        store_dir.mkdir(parents=True, exist_ok=True)
        store_path = str(store_dir)
    return AsyncClient(homeserver.rstrip("/"), user_id, store_path=store_path, config=config)


async def log_in(
    client: AsyncClient,
    state: SessionState,
    *,
    password: str | None,
    access_token: str | None,
    device_name: str,
) -> None:
    """Restore the stored session, or log in with the configured token or password.

    Bad credentials are a ``ConfigError`` naming the key; the secret itself is never logged.
    """
    if access_token:
        await _use_token(client, access_token, "matrix.access_token")
        await state.set("device_id", client.device_id or "")
        return
    stored_token = await state.get("access_token")
    stored_device = await state.get("device_id")
    if stored_token and stored_device:
        try:
            await _use_token(client, stored_token, None)
        except ConfigError:
            log.info("matrix: the stored session has expired; logging in again")
        else:
            if client.device_id == stored_device:
                return
    if not password:
        raise ConfigError("matrix.password", "is required to log in (or set matrix.access_token)")
    client.device_id = stored_device or None
    response = await client.login(password=password, device_name=device_name)
    if not isinstance(response, LoginResponse):
        raise ConfigError("matrix.password", f"the homeserver refused the login ({_reason(response)})")
    await state.set("device_id", response.device_id)
    await state.set("access_token", response.access_token)
    log.info("matrix: logged in as %s, device %s", response.user_id, response.device_id)


async def _use_token(client: AsyncClient, token: str, key: str | None) -> None:
    client.access_token = token
    response = await client.whoami()
    if not isinstance(response, WhoamiResponse):
        client.access_token = ""
        raise ConfigError(key or "matrix.access_token", f"the homeserver refused the token ({_reason(response)})")
    if client.user_id and response.user_id != client.user_id and key:
        raise ConfigError("matrix.user_id", f"the access token belongs to {response.user_id}, not {client.user_id}")
    if not response.device_id:
        raise InternalError("the homeserver did not say which device this token belongs to")
    client.restore_login(response.user_id, response.device_id, token)


async def keep_keys(client: AsyncClient) -> None:
    """The E2EE chores ``sync_forever`` would do after a sync: upload, query and claim keys,
    and send queued to-device messages. Nothing to do without encryption."""
    if client.olm is None:
        return
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()


def _reason(response: object) -> str:
    code = getattr(response, "status_code", None)
    message = getattr(response, "message", None) or type(response).__name__
    return f"{code}: {message}" if code else str(message)


__all__ = ["keep_keys", "log_in", "make_client"]
