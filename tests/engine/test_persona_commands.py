"""Persona and lore commands through the command core, with the real card fixtures.

Commands need no model's words, so most tests run over a FakeBackend (``fake_app`` in
tests/engine/conftest.py); the lore test checks where lore lands in a real prompt, on the real model.
"""

from __future__ import annotations

import base64
import json

from engine.commands.core import CommandContext
from engine.types import Attachment, Author, IncomingMessage, RoomRef
from tests.conftest import run_bot

ROOM = RoomRef("test", "lore-room")
ADMIN = Author("a", "Admin", is_operator=True)
USER = Author("u", "Ann")


async def test_import_card_attachment_and_use_it(fake_app, fixtures_dir):
    app, _backend = fake_app
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


async def test_bad_card_is_one_line_and_imports_nothing(fake_app, tmp_path):
    app, _backend = fake_app
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


async def test_chat_import_stays_in_the_persona_folder_and_reads_no_host_file(fake_app, tmp_path):
    """A file from chat may name any path in ``avatar:``; the bot must not copy that host file."""
    app, _backend = fake_app
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


async def test_chat_import_never_overwrites_without_replace(fake_app):
    app, _backend = fake_app
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


async def test_only_the_console_may_import_by_path(fake_app, fixtures_dir):
    app, _backend = fake_app
    conv = app.conversation
    path = str(fixtures_dir / "Seraphina.png")
    remote = await conv.run_command(f"persona import {path}", CommandContext(ROOM, ADMIN))
    assert not remote.ok and "attach" in remote.text and "seraphina" not in conv.personas.names()
    console = Author("console", "User", is_operator=True, on_host=True)
    local = await conv.run_command(f"persona import {path}", CommandContext(ROOM, console))
    assert local.ok and "seraphina" in conv.personas.names()


def _chunks(png: bytes) -> dict[str, dict]:
    from personas.png import read_chunks, text_chunks

    texts = text_chunks(read_chunks(png, "card"), "card", 1 << 23)
    return {key: json.loads(base64.b64decode(texts[key])) for key in ("chara", "ccv3") if key in texts}


async def test_list_shows_display_names_with_macros_resolved(fake_app):
    app, _backend = fake_app
    conv = app.conversation
    folder = conv.settings.user_persona_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quillon-marsh.yaml").write_text(
        "name: Quillon Marsh\ndescription: '{{char}} is a lighthouse keeper who waves at {{user}}.'\n"
    )
    conv.personas.reload()
    listing = await conv.run_command("persona list", CommandContext(ROOM, USER))
    assert "quillon-marsh (Quillon Marsh): Quillon Marsh is a lighthouse keeper who waves at Ann." in listing.text
    assert "{{" not in listing.text
    shown = await conv.run_command("persona show quillon-marsh", CommandContext(ROOM, USER))
    assert "description: Quillon Marsh is a lighthouse keeper who waves at Ann." in shown.text


async def test_show_lists_lorebook_entries(fake_app, fixtures_dir):
    app, _backend = fake_app
    conv = app.conversation
    card = Attachment("Seraphina.png", "image/png", data=(fixtures_dir / "Seraphina.png").read_bytes())
    assert (await conv.run_command("persona import", CommandContext(ROOM, ADMIN, (card,)))).ok
    book = conv.personas.lorebooks_for(conv.personas.get("seraphina"))[0]
    shown = await conv.run_command("persona show seraphina", CommandContext(ROOM, USER))
    entry = book.entries[0]
    first_words = " ".join(entry.content.split()[:4])
    assert f"lorebook {book.name}: {len(book.entries)} entries" in shown.text
    assert f"[{', '.join(entry.keys)}] {first_words}" in shown.text


async def test_chat_export_attaches_the_rooms_card(fake_app, fixtures_dir):
    app, _backend = fake_app
    conv = app.conversation
    card = Attachment("Seraphina.png", "image/png", data=(fixtures_dir / "Seraphina.png").read_bytes())
    assert (await conv.run_command("persona import", CommandContext(ROOM, ADMIN, (card,)))).ok
    assert (await conv.run_command("persona set seraphina", CommandContext(ROOM, ADMIN))).ok
    result = await conv.run_command("persona export", CommandContext(ROOM, USER))
    assert result.ok, result.text
    (png,) = result.files
    assert (png.filename, png.content_type) == ("seraphina.png", "image/png")
    chunks = _chunks(png.data)
    assert chunks["chara"]["spec"] == "chara_card_v2" and chunks["ccv3"]["spec"] == "chara_card_v3"
    assert chunks["ccv3"]["data"]["name"] == "Seraphina" and chunks["ccv3"]["data"]["character_book"]["entries"]
    as_json = await conv.run_command("persona export --json", CommandContext(ROOM, USER))
    (js,) = as_json.files
    assert js.content_type == "application/json" and json.loads(js.data)["data"]["name"] == "Seraphina"
    other = await conv.run_command("persona export storyteller", CommandContext(ROOM, USER))
    assert not other.ok and not other.files and "operator" in other.text and "\n" not in other.text
    by_operator = await conv.run_command("persona export storyteller --json", CommandContext(ROOM, ADMIN))
    assert by_operator.ok and json.loads(by_operator.files[0].data)["data"]["name"] == "Storyteller"


def test_personas_export_cli(config_file, fixtures_dir, tmp_path):
    config = str(config_file())
    assert run_bot("personas", "import", str(fixtures_dir / "Seraphina.png"), "--config", config).returncode == 0
    printed = run_bot("personas", "export", "seraphina", "--config", config)
    assert printed.returncode == 0, printed.stderr
    card = json.loads(printed.stdout)
    assert card["spec"] == "chara_card_v2" and card["data"]["name"] == "Seraphina"
    assert card["data"]["character_book"]["entries"]
    out = tmp_path / "out.png"
    written = run_bot("personas", "export", "seraphina", "--png", str(out), "--config", config)
    assert written.returncode == 0, written.stderr
    chunks = _chunks(out.read_bytes())
    assert chunks["ccv3"]["spec"] == "chara_card_v3" and chunks["ccv3"]["spec_version"] == "3.0"
    assert chunks["ccv3"]["data"] == chunks["chara"]["data"] == card["data"]
    missing = run_bot("personas", "export", "nobody", "--config", config)
    assert missing.returncode == 1 and "unknown persona" in missing.stderr and "Traceback" not in missing.stderr


async def test_chat_import_takes_a_charx_card(fake_app, fixtures_dir):
    app, _backend = fake_app
    import io
    import zipfile

    from personas import export_card_v3, read_card

    seraphina = read_card(fixtures_dir / "Seraphina.png")
    card = export_card_v3(seraphina.persona.model_copy(update={"nickname": "Sera"}), seraphina.lorebook)
    card["data"]["assets"] = [{"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main"}]
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        archive.writestr("card.json", json.dumps(card))
        archive.writestr("assets/icon/images/main.png", seraphina.image)
    upload = Attachment("seraphina.charx", "application/zip", data=raw.getvalue())
    done = await app.conversation.run_command("persona import", CommandContext(ROOM, ADMIN, (upload,)))
    assert done.ok, done.text
    persona = app.conversation.personas.get("seraphina")
    assert persona.nickname == "Sera" and persona.avatar and persona.render("{{char}}", "Ann") == "Sera"
