"""A model server that dies, comes back, refuses or is down: one-line notices, nothing lost, no key leaked."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bench.llama_server import LlamaServer
from engine.commands.core import CommandContext
from engine.types import Author, IncomingMessage, RoomRef
from errors import ModelError
from log_redaction import SecretRedactor, config_secrets
from tests.conftest import SMOL
from tests.remote.conftest import remote_config, started_app

ROOM = RoomRef("test", "flaky")
ALICE = Author("u1", "Alice")
OPERATOR = Author("console", "User", is_operator=True, on_host=True)
KEY = "sk-test-4f9a2c7e1b"


def message(text: str) -> IncomingMessage:
    return IncomingMessage(room=ROOM, author=ALICE, text=text, message_id=None, addressed=True)


async def stored(app) -> list[str]:
    room = await app.conversation.room(ROOM)
    return [m.text for m in await app.store.messages(room.conversation_id)]


async def test_a_server_killed_mid_reply_and_brought_back(tmp_path, own_server: LlamaServer):
    app = await started_app(remote_config(tmp_path, own_server.url, sampling={"max_tokens": 200}))
    conv = app.conversation
    try:
        reply = await conv.reply_now(message("Write a very long poem about the ocean, at least 40 lines."))
        with pytest.raises(ModelError) as failed:
            async for _ in reply:
                if own_server.process is not None:
                    own_server.kill()
        notice = str(failed.value)
        assert "\n" not in notice and "model server failed" in notice and "your message is kept" in notice
        await conv.scheduler.wait_idle()
        assert await stored(app) == ["Write a very long poem about the ocean, at least 40 lines."]
        stats = await conv.run_command("stats", CommandContext(ROOM, ALICE))
        assert "endpoint health: failing" in stats.text

        own_server.start()  # the same port: the backend finds it again by itself
        again = await conv.reply_now(message("Are you back?"))
        assert (await asyncio.wait_for(again.text(), 60)).strip()
        await conv.scheduler.wait_idle()
        assert (await stored(app))[:2] == [
            "Write a very long poem about the ocean, at least 40 lines.",
            "Are you back?",
        ], "the first message is still there, answered in the next turn's context"
        stats = await conv.run_command("stats", CommandContext(ROOM, ALICE))
        assert "endpoint health: ok" in stats.text
    finally:
        await app.close()


async def test_a_down_server_gets_retries_then_one_line(tmp_path, own_server: LlamaServer, caplog):
    app = await started_app(remote_config(tmp_path, own_server.url))
    try:
        own_server.kill()
        reply = await app.conversation.reply_now(message("Hello?"))
        with pytest.raises(ModelError, match=r"^the model server failed: connection refused; your message is kept$"):
            await asyncio.wait_for(reply.text(), 30)
        assert caplog.text.count("retry") == 3, "three retries with back-off before the room is told"
        assert "Traceback" not in caplog.text
        assert await stored(app) == ["Hello?"]
    finally:
        await app.close()


async def test_loading_a_down_server_rolls_back_to_the_local_model(tmp_path, own_server: LlamaServer):
    app = await started_app(remote_config(tmp_path, own_server.url, default="smollm2-135m-instruct"))
    try:
        own_server.kill()
        result = await app.conversation.run_command("model load big", CommandContext(ROOM, OPERATOR))
        assert not result.ok and "does not answer" in result.text and "kept smollm2-135m-instruct" in result.text
        assert app.host.require().kind == "local"
    finally:
        await app.close()


async def test_the_api_key_is_sent_and_never_logged(tmp_path, caplog):
    from config import load_config

    server = LlamaServer(SMOL, tmp_path, api_key=KEY).start()
    try:
        path = tmp_path / "config.yaml"
        path.write_text(
            f"model:\n  default: big\n  models:\n    - name: big\n      endpoint: {server.url}\n"
            f"      api_key: ${{LLM_API_KEY}}\n      n_ctx: 2048\n"
            f"database:\n  url: sqlite+aiosqlite:///{tmp_path}/hearth.db\npersonas:\n  dir: {tmp_path}/p\n"
        )
        config = load_config(path, env={"LLM_API_KEY": KEY})
        assert KEY in config_secrets(config), "the redactor must know the key"
        assert KEY not in repr(config.engine_settings())
        redactor = SecretRedactor(config_secrets(config))
        caplog.handler.addFilter(redactor)
        caplog.set_level(logging.DEBUG)
        app = await started_app(config)
        try:
            assert (await (await app.conversation.reply_now(message("Hi!"))).text()).strip()
        finally:
            await app.close()
        assert KEY not in caplog.text
        wrong = load_config(path, env={"LLM_API_KEY": "sk-wrong-key-123"})
        with pytest.raises(ModelError, match="refused: HTTP 401") as refused:
            await started_app(wrong)
        assert "sk-wrong" not in str(refused.value)
    finally:
        server.stop()
