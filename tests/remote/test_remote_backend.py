"""The OpenAI-compatible backend against a real ``llama_cpp.server``: chat, streaming, cancel, counts."""

from __future__ import annotations

import asyncio

import httpx

from bench.llama_server import LlamaServer
from engine.commands.core import CommandContext
from engine.remote_backend import RemoteBackend
from engine.types import Author, IncomingMessage, RoomRef
from tests.conftest import run_bot

ROOM = RoomRef("test", "remote")
ALICE = Author("u1", "Alice")
OPERATOR = Author("console", "User", is_operator=True, on_host=True)


def message(text: str) -> IncomingMessage:
    return IncomingMessage(room=ROOM, author=ALICE, text=text, message_id=None, addressed=True)


async def stored(app) -> list[str]:
    room = await app.conversation.room(ROOM)
    return [m.text for m in await app.store.messages(room.conversation_id)]


def test_console_chat_over_the_server(tmp_path, llama_server: LlamaServer):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model:\n  default: big\n  sampling:\n    max_tokens: 32\n  models:\n"
        f"    - name: big\n      endpoint: {llama_server.url}\n      n_ctx: 2048\n"
        f"database:\n  url: sqlite+aiosqlite:///{tmp_path}/hearth.db\n"
        f"personas:\n  dir: {tmp_path}/personas\n"
    )
    result = run_bot("chat", "--config", str(config), stdin="Hello, who are you?\n/model info\n/model list\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines and lines[0].strip(), "the first line must be the model's reply"
    assert f"endpoint: {llama_server.url}" in result.stdout
    assert "token counts: exact, the server's /extras/tokenize" in result.stdout
    assert "server" in result.stdout and "SmolLM2" in result.stdout, "model list shows what the server serves"
    checked = run_bot("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{llama_server.url} answers" in checked.stdout


async def test_replies_stream_in_chunks_and_are_stored(remote_app):
    backend = remote_app.host.require()
    assert isinstance(backend, RemoteBackend)
    reply = await remote_app.conversation.reply_now(message("Count from one to ten."))
    chunks = [chunk async for chunk in reply]
    assert len(chunks) > 3, "the reply arrives in pieces, not at once"
    assert reply.stats.completion_tokens == len(chunks) and reply.stats.finish_reason in ("stop", "length")
    await remote_app.conversation.scheduler.wait_idle()
    assert await stored(remote_app) == ["Count from one to ten.", "".join(chunks).strip()]


async def test_stop_closes_the_stream(remote_app):
    conv = remote_app.conversation
    reply = await conv.reply_now(message("Write a very long poem about the ocean, at least 40 lines."))
    assert await anext(aiter(reply)), "stop once the first words are on screen"
    assert (await conv.run_command("stop", CommandContext(ROOM, ALICE))).text == "stopped"
    await asyncio.wait_for(reply.text(), 5)
    assert reply.stats.finish_reason == "cancelled" and reply.stats.completion_tokens < 48
    follow_up = await conv.reply_now(message("Say hi."))
    assert (await asyncio.wait_for(follow_up.text(), 60)).strip(), "the server is free for the next reply"


async def test_counts_are_exact_through_the_tokenize_endpoint(remote_app, llama_server: LlamaServer):
    backend = remote_app.host.require()
    text = "The quick brown fox jumps over the lazy dog, twice."
    root = llama_server.url.removesuffix("/v1")
    async with httpx.AsyncClient() as client:
        server = (await client.post(f"{root}/extras/tokenize", json={"input": text})).json()["tokens"]
    assert await asyncio.to_thread(backend.tokenize, text) == server
    from llama_cpp import Llama

    from tests.conftest import SMOL

    vocab = Llama(model_path=str(SMOL), vocab_only=True, verbose=False)
    try:
        assert len(server) == len(vocab.tokenize(text.encode(), add_bos=True, special=True))
    finally:
        vocab.close()
    assert "exact, the server's /extras/tokenize" in "\n".join(backend.details)
    reply = await remote_app.conversation.reply_now(message("Hello there."))
    await reply.text()
    assert reply.stats.prompt_tokens > 10


async def test_a_local_tokenizer_counts_without_the_server(tmp_path, llama_server: LlamaServer):
    from tests.conftest import SMOL
    from tests.remote.conftest import remote_config, started_app

    app = await started_app(remote_config(tmp_path, llama_server.url, tokenizer=str(SMOL)))
    try:
        backend = app.host.require()
        assert any(f"exact, local tokenizer {SMOL}" in line for line in backend.details)
        assert backend.template is not None and backend.template.name == "gguf", "the GGUF's own chat template"
        reply = await app.conversation.reply_now(message("Hi!"))
        assert (await reply.text()).strip()
    finally:
        await app.close()


async def test_operator_swaps_local_and_remote(tmp_path, llama_server: LlamaServer):
    from tests.remote.conftest import remote_config, started_app

    app = await started_app(remote_config(tmp_path, llama_server.url, default="smollm2-135m-instruct"))
    conv = app.conversation
    try:
        assert app.host.require().kind == "local"
        swapped = await conv.run_command("model load big", CommandContext(ROOM, OPERATOR))
        assert swapped.ok and "big is now active" in swapped.text, swapped.text
        assert app.host.require().kind == "remote" and app.host.max_concurrent == 2
        assert (await (await conv.reply_now(message("Hi!"))).text()).strip()
        back = await conv.run_command("model load smollm2-135m-instruct", CommandContext(ROOM, OPERATOR))
        assert back.ok and app.host.require().kind == "local" and app.host.max_concurrent == app.config.model.parallel
    finally:
        await app.close()
