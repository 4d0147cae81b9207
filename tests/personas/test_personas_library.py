"""The library: built-ins, overrides, errors listed not raised, lorebooks, atomic imports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from errors import PersonaError
from personas import BUILTIN_DIR, Lorebook, LoreEntry, Persona, PersonaLibrary, export_card_json
from personas.cards import placeholder_png


def test_builtins_load_without_errors() -> None:
    library = PersonaLibrary([])
    assert library.names() == ["assistant", "companion", "narrator", "storyteller"]
    assert library.errors == []
    assert library.get("assistant").name == "Hearth"
    assert library.dirs == [BUILTIN_DIR]


@pytest.mark.parametrize("name", ["assistant", "companion", "storyteller", "narrator"])
def test_builtin_personas_are_short_and_complete(name: str) -> None:
    persona = PersonaLibrary([]).get(name)
    system = persona.render_system("Sam")
    assert len(system.split()) < 300
    assert persona.render_greeting("Sam")
    assert 1 <= len(persona.example_dialogues) <= 2
    assert "Example 1:" in system and "{{" not in system
    assert persona.sampling.as_dict()  # each one tunes sampling


def test_storyteller_is_warmer_than_assistant() -> None:
    library = PersonaLibrary([])
    assert library.get("storyteller").sampling.temperature > library.get("assistant").sampling.temperature


def test_get_is_case_insensitive_by_key_or_name() -> None:
    library = PersonaLibrary([])
    assert library.get("NARRATOR") is library.get("narrator")
    assert library.get("hearth") is library.get("assistant")
    assert "Companion" in library
    with pytest.raises(PersonaError) as info:
        library.get("nobody")
    assert str(info.value) == "unknown persona 'nobody' (available: assistant, companion, narrator, storyteller)"


def test_user_dirs_override_in_order_and_errors_are_listed(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "Assistant.yaml").write_text("name: Mine\n")
    (first / "pirate.yaml").write_text("name: Pirate\n")
    (second / "pirate.yml").write_text("name: Pirate Two\n")
    (second / "broken.yaml").write_text("name: Broken\nsampling:\n  top_k: many\n")
    (second / "notes.txt").write_text("ignored")
    library = PersonaLibrary([first, second, tmp_path / "missing"])
    assert library.names() == ["assistant", "companion", "narrator", "pirate", "storyteller"]
    assert library.get("assistant").name == "Mine"
    assert library.get("pirate").name == "Pirate Two"
    # A user folder that does not exist yet is normal (it appears with the first import).
    assert library.errors == [
        f"{second / 'broken.yaml'}:3: sampling.top_k: "
        "Input should be a valid integer, unable to parse string as an integer",
    ]


def test_reload_sees_new_files(tmp_path: Path) -> None:
    library = PersonaLibrary([tmp_path], include_builtin=False)
    assert library.names() == []
    (tmp_path / "kit.yaml").write_text("name: Kit\n")
    assert library.names() == []
    library.reload()
    assert library.names() == ["kit"]


def test_lorebooks_load_in_both_formats(tmp_path: Path, eldoria_json: dict) -> None:
    (tmp_path / "lorebooks").mkdir()
    (tmp_path / "lorebooks" / "Eldoria.json").write_text(json.dumps(eldoria_json))
    (tmp_path / "lorebooks" / "town.yaml").write_text("name: Town\nentries:\n  - keys: [inn]\n    content: An inn.\n")
    (tmp_path / "lorebooks" / "bad.json").write_text("{nope")
    (tmp_path / "kit.yaml").write_text("name: Kit\nlorebooks: [town, eldoria, ghost]\n")
    library = PersonaLibrary([tmp_path], include_builtin=False)
    assert library.lorebook_names() == ["eldoria", "town"]
    assert len(library.lorebook("ELDORIA").entries) == 4
    assert library.lorebook("Town").entries[0].keys == ["inn"]
    books = library.lorebooks_for(library.get("kit"))
    assert [b.name for b in books] == ["Town", "Eldoria"]
    assert any(e.startswith(f"{tmp_path / 'lorebooks' / 'bad.json'}:1: invalid JSON") for e in library.errors)
    assert f"{tmp_path / 'kit.yaml'}: lorebooks: unknown lorebook 'ghost'" in library.errors
    with pytest.raises(PersonaError, match="unknown lorebook 'ghost'"):
        library.lorebook("ghost")


def test_save_lorebook(tmp_path: Path) -> None:
    library = PersonaLibrary([tmp_path], include_builtin=False)
    book = Lorebook(name="My World", entries=[LoreEntry(uid=1, keys=["x"], content="X.")])
    path = library.save_lorebook(book, tmp_path)
    assert path == tmp_path / "lorebooks" / "my-world.json"
    assert library.lorebook("my-world") == book
    assert library.lorebook("My World") == book


def test_import_png_card(tmp_path: Path, seraphina_png: Path) -> None:
    dest = tmp_path / "user"
    library = PersonaLibrary([dest])
    persona = library.import_file(seraphina_png, dest)
    assert persona.name == "Seraphina"
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == [
        "seraphina.json",
        "seraphina.png",
        "seraphina.yaml",
    ]
    assert persona.lorebooks == ["seraphina"]
    assert persona.avatar == str((dest / "avatars" / "seraphina.png").resolve())
    assert library.get("seraphina") == persona
    assert library.errors == []
    books = library.lorebooks_for(persona)
    assert [b.name for b in books] == ["Eldoria"]
    assert len(books[0].entries) == 4
    avatar = (dest / "avatars" / "seraphina.png").read_bytes()
    assert b"chara" not in avatar  # the stored avatar carries no stale card data


def test_import_json_card_and_yaml(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    card = export_card_json(Persona(name="Captain Nemo", description="Sails.", wake_words=["nemo"]))
    (source / "nemo.json").write_text(json.dumps(card))
    (source / "fox.yml").write_text("name: Fox\navatar: fox.png\n")
    (source / "fox.png").write_bytes(placeholder_png("Fox"))
    dest = tmp_path / "dest"
    library = PersonaLibrary([dest], include_builtin=False)
    nemo = library.import_file(source / "nemo.json", dest)
    assert nemo.wake_words == ["nemo"]
    assert library.get("Captain Nemo") == nemo
    assert library.names() == ["captain-nemo"]
    fox = library.import_file(source / "fox.yml", dest)
    assert fox.avatar == str((dest / "avatars" / "fox.png").resolve())
    assert library.names() == ["captain-nemo", "fox"]


def test_failed_import_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    library = PersonaLibrary([dest], include_builtin=False)
    card = export_card_json(Persona(name="Kit"))
    card["data"]["character_book"] = {"entries": [{"keys": ["a"], "insertion_order": "first", "content": "c"}]}
    (tmp_path / "kit.json").write_text(json.dumps(card))
    with pytest.raises(PersonaError, match="insertion_order"):
        library.import_file(tmp_path / "kit.json", dest)
    (tmp_path / "kit.txt").write_text("name: Kit")
    with pytest.raises(PersonaError, match=r"cannot import '\.txt'"):
        library.import_file(tmp_path / "kit.txt", dest)
    (tmp_path / "fox.yaml").write_text("name: Fox\navatar: missing.png\n")
    with pytest.raises(PersonaError, match="cannot read"):
        library.import_file(tmp_path / "fox.yaml", dest)
    assert not dest.exists()


def test_import_write_failure_leaves_no_files(tmp_path: Path, seraphina_png: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "seraphina.yaml").mkdir()  # the final rename of the persona file will fail
    library = PersonaLibrary([dest], include_builtin=False)
    with pytest.raises(PersonaError, match="cannot write"):
        library.import_file(seraphina_png, dest)
    leftovers = [p for p in dest.rglob("*") if p.is_file()]
    assert leftovers == []


def test_failed_reimport_restores_previous_files(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    library = PersonaLibrary([dest], include_builtin=False)
    (tmp_path / "kit.yaml").write_text("name: Kit\navatar: kit.png\n")
    (tmp_path / "kit.png").write_bytes(placeholder_png("Kit"))
    library.import_file(tmp_path / "kit.yaml", dest)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    (tmp_path / "kit.png").write_bytes(placeholder_png("Other"))
    (dest / "kit.yaml").unlink()
    (dest / "kit.yaml").mkdir()  # the persona rename fails after the avatar was replaced
    with pytest.raises(PersonaError, match="cannot write"):
        library.import_file(tmp_path / "kit.yaml", dest)
    (dest / "kit.yaml").rmdir()
    after = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    before.pop(dest / "kit.yaml")
    assert after == before  # the old avatar is back, no temp or backup files remain


def test_a_broken_persona_is_named_with_its_error_when_asked_for(tmp_path: Path) -> None:
    """An unquoted ``{{char}}`` value makes YAML read a mapping: say so, and where, not "unknown"."""
    (tmp_path / "bob.yaml").write_text("name: Bob\nsystem_prompt: {{char}} is a pirate.\n", encoding="utf-8")
    library = PersonaLibrary([tmp_path])
    with pytest.raises(PersonaError) as raised:
        library.get("Bob")
    message = str(raised.value)
    assert message.startswith("persona 'Bob' did not load:") and "bob.yaml:2" in message
    assert "line 2: a value that starts with {{ must be quoted" in message and "\n" not in message
    with pytest.raises(PersonaError, match="unknown persona 'nobody'"):
        library.get("nobody")
