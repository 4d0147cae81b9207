"""Persona and lore commands through the command core, with the real card fixtures."""

from __future__ import annotations

from engine.commands.core import CommandContext
from engine.types import Attachment, Author, IncomingMessage, RoomRef
from tests.conftest import run_bot

ROOM = RoomRef("test", "lore-room")
ADMIN = Author("a", "Admin", is_operator=True)
USER = Author("u", "Ann")


async def test_import_card_attachment_and_use_it(app, fixtures_dir):
    conv = app.conversation
    card = Attachment("Seraphina.png", "image/png", data=(fixtures_dir / "Seraphina.png").read_bytes())
    refused = await conv.run_command("persona import", CommandContext(ROOM, USER, (card,)))
    assert not refused.ok and "seraphina" not in conv.personas.names()
    done = await conv.run_command("persona import", CommandContext(ROOM, ADMIN, (card,)))
    assert done.ok, done.text
    assert "Seraphina" in done.text
    assert (await conv.run_command("persona set seraphina", CommandContext(ROOM, ADMIN))).ok
    listing = await conv.run_command("lore list", CommandContext(ROOM, USER))
    assert "Eldoria" in listing.text or "entries" in listing.text


async def test_bad_card_is_one_line_and_imports_nothing(app, tmp_path):
    conv = app.conversation
    before = conv.personas.names()
    junk = Attachment("card.png", "image/png", data=b"\x89PNG\r\n\x1a\nnot really a png")
    result = await conv.run_command("persona import", CommandContext(ROOM, ADMIN, (junk,)))
    assert not result.ok and "\n" not in result.text
    assert conv.personas.names() == before


async def test_room_lore_is_added_used_and_removed(app):
    conv = app.conversation
    assert not (await conv.run_command("lore add dragon Dragons here", CommandContext(ROOM, USER))).ok
    added = await conv.run_command(
        'lore add dragon,wyrm "Dragons in this land breathe blue frost."', CommandContext(ROOM, ADMIN)
    )
    assert added.ok and "#1" in added.text
    reply = await conv.reply_now(IncomingMessage(ROOM, USER, "Tell me about the dragon.", addressed=True))
    await reply.text()
    prompt = (await conv.room(ROOM)).last_prompt
    assert any("blue frost" in m.content for m in prompt.messages), "keyword lore reaches the prompt"
    assert "blue frost" not in prompt.messages[0].content, "keyword lore stays out of the stable prefix"
    assert (await conv.run_command("lore remove 1", CommandContext(ROOM, ADMIN))).ok
    assert "#1" not in (await conv.run_command("lore list", CommandContext(ROOM, USER))).text


def test_personas_cli(config_file, fixtures_dir, tmp_path):
    config = str(config_file())
    listing = run_bot("personas", "list", "--config", config)
    assert listing.returncode == 0
    for name in ("assistant", "companion", "storyteller", "narrator"):
        assert name in listing.stdout
    imported = run_bot("personas", "import", str(fixtures_dir / "Seraphina.png"), "--config", config)
    assert imported.returncode == 0, imported.stderr
    shown = run_bot("personas", "show", "seraphina", "--config", config)
    assert shown.returncode == 0 and '"name": "Seraphina"' in shown.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: X\n\tpersonality: tabbed\n")
    failed = run_bot("personas", "import", str(bad), "--config", config)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr and "bad.yaml" in failed.stderr


def _yaml_card(text: str) -> Attachment:
    return Attachment("persona.yaml", "text/yaml", data=text.encode("utf-8"))


async def test_chat_import_stays_in_the_persona_folder_and_reads_no_host_file(app, tmp_path):
    """A file from chat may name any path in ``avatar:``; the bot must not copy that host file."""
    conv = app.conversation
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"host secret bytes")
    card = _yaml_card(f"name: ../../Sneaky One\ndescription: climbs\navatar: {secret}\n")
    done = await conv.run_command("persona import", CommandContext(ROOM, ADMIN, (card,)))
    assert done.ok, done.text
    folder = conv.settings.user_persona_dir
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert written == ["sneaky-one.yaml"], written
    assert conv.personas.get("sneaky-one").avatar is None
    assert not any(b"host secret" in p.read_bytes() for p in folder.rglob("*") if p.is_file())


async def test_chat_import_never_overwrites_without_replace(app):
    conv = app.conversation
    builtin = conv.personas.get("assistant").description
    shadow = _yaml_card("name: Assistant\ndescription: an impostor\n")
    refused = await conv.run_command("persona import", CommandContext(ROOM, ADMIN, (shadow,)))
    assert not refused.ok and "already exists" in refused.text and "--replace" in refused.text
    assert conv.personas.get("assistant").description == builtin
    first = _yaml_card("name: Quill\ndescription: first\n")
    assert (await conv.run_command("persona import", CommandContext(ROOM, ADMIN, (first,)))).ok
    second = _yaml_card("name: Quill\ndescription: second\n")
    assert not (await conv.run_command("persona import", CommandContext(ROOM, ADMIN, (second,)))).ok
    assert conv.personas.get("quill").description == "first"
    replaced = await conv.run_command("persona import --replace", CommandContext(ROOM, ADMIN, (second,)))
    assert replaced.ok and conv.personas.get("quill").description == "second"


async def test_only_the_console_may_import_by_path(app, fixtures_dir):
    conv = app.conversation
    path = str(fixtures_dir / "Seraphina.png")
    remote = await conv.run_command(f"persona import {path}", CommandContext(ROOM, ADMIN))
    assert not remote.ok and "attach" in remote.text and "seraphina" not in conv.personas.names()
    console = Author("console", "User", is_operator=True, on_host=True)
    local = await conv.run_command(f"persona import {path}", CommandContext(ROOM, console))
    assert local.ok and "seraphina" in conv.personas.names()
