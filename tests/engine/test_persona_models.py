"""A persona's preferred model: swapped in before its room's turn when RAM allows (real models)."""

from __future__ import annotations

import asyncio
import logging

from bot import App
from config import HearthConfig
from engine.commands.core import CommandContext
from engine.types import Author, IncomingMessage, RoomRef

ROOM = RoomRef("test", "persona-models")
ADMIN = Author("u0", "Root", is_operator=True)
SMOL = "smollm2-135m-instruct"


async def use_persona(app, key: str, name: str, model: str) -> None:
    folder = app.config.personas.dir
    folder.mkdir(parents=True, exist_ok=True)
    text = f"name: {name}\ndescription: A test persona.\nmodel: {model}\nsampling: {{max_tokens: 8}}\n"
    (folder / f"{key}.yaml").write_text(text)
    app.personas.reload()
    done = await app.conversation.run_command(f"persona set {key}", CommandContext(ROOM, ADMIN))
    assert done.ok, done.text


async def reply_to(app, text: str):
    reply = await asyncio.wait_for(app.conversation.reply_now(IncomingMessage(ROOM, ADMIN, text, addressed=True)), 120)
    await asyncio.wait_for(reply.text(), 120)
    await app.conversation.scheduler.wait_idle()
    return reply


async def test_the_turn_runs_on_the_personas_preferred_model(app, gemma_path):
    conv = app.conversation
    await use_persona(app, "kit", "Kit", "gemma-3-270m")
    shown = await conv.run_command("persona show", CommandContext(ROOM, ADMIN))
    assert "preferred model: gemma-3-270m" in shown.text
    assert conv.host.entry.name == SMOL
    reply = await reply_to(app, "Hi Kit, how are you?")
    assert conv.host.entry.name == "gemma-3-270m"
    assert reply.stats.completion_tokens >= 1
    backend = conv.host.require()
    prompt = (await conv.room(ROOM)).last_prompt
    assert prompt.tokens == backend.tokenize(backend.render(prompt.messages)), "built with gemma's tokenizer"
    assert backend.render(prompt.messages).startswith("<bos><start_of_turn>user")


async def test_an_unmet_preference_keeps_the_model_and_says_why_once(app, gemma_path, caplog):
    conv = app.conversation
    caplog.set_level(logging.WARNING, logger="engine.persona_models")
    await use_persona(app, "ghost", "Ghost", "no-such-model")
    await reply_to(app, "Hello?")
    await reply_to(app, "Anyone?")
    assert conv.host.entry.name == SMOL
    unknown = [r.getMessage() for r in caplog.records if "no-such-model" in r.getMessage()]
    assert len(unknown) == 1, unknown
    assert unknown[0].startswith(f"persona Ghost prefers model no-such-model; keeping {SMOL}: unknown model")

    conv.host.available_memory = lambda: 1 << 20  # 1 MB free: gemma's estimate cannot fit
    await use_persona(app, "big", "Big", "gemma-3-270m")
    reply = await reply_to(app, "Hello again.")
    assert conv.host.entry.name == SMOL and reply.stats.completion_tokens >= 1
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"keeping {SMOL}: not enough memory for gemma-3-270m" in line for line in lines), lines


async def test_the_switch_turns_preferences_off(app, gemma_path, tmp_path):
    conv = app.conversation
    conv.persona_models.enabled = False
    await use_persona(app, "kit", "Kit", "gemma-3-270m")
    await reply_to(app, "Hi Kit.")
    assert conv.host.entry.name == SMOL
    shown = await conv.run_command("persona show", CommandContext(ROOM, ADMIN))
    assert "ignored: engine.persona_models is off" in shown.text
    config = HearthConfig.model_validate({"engine": {"persona_models": False}})
    assert App.build(config).conversation.persona_models.enabled is False
    assert App.build(HearthConfig()).conversation.persona_models.enabled is True
