"""YAML loading: errors name file, line and field; tabs and duplicate keys are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from errors import PersonaError
from personas import Persona, load_lorebook_file, load_persona_file, persona_to_yaml
from personas.loader import parse_persona_yaml


def write(tmp_path: Path, text: str, name: str = "kit.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_a_valid_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'name: Kit\ndescription: |\n  A fox.\n  Sly.\nsampling:\n  temperature: 0.7\n  stop: ["\\nSam:"]\n'
        "wake_words: [kit, fox]\nlorebooks: [forest]\navatar: kit.png\n",
    )
    persona = load_persona_file(path)
    assert persona.name == "Kit"
    assert persona.description == "A fox.\nSly.\n"
    assert persona.sampling.as_dict() == {"temperature": 0.7, "stop": ["\nSam:"]}
    assert persona.wake_words == ["kit", "fox"]
    assert persona.lorebooks == ["forest"]
    assert persona.avatar == str(tmp_path.resolve() / "kit.png")  # relative to the file
    assert persona.source == str(path)


def test_wrong_type_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "name: Kit\n\n# comment\ngreeting: hi\n\n\nsampling:\n  temperature: hot\n", "bad.yaml")
    with pytest.raises(PersonaError) as info:
        load_persona_file(path)
    assert (
        str(info.value)
        == f"{path}:8: sampling.temperature: Input should be a valid number, unable to parse string as a number"
    )


def test_unknown_field_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: Kit\ndescripton: typo\n")
    with pytest.raises(PersonaError, match=rf"^{path}:2: descripton: Extra inputs are not permitted$"):
        load_persona_file(path)


def test_unknown_macro_fails_at_load_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: Kit\ngreeting: hi {{random}}\n")
    with pytest.raises(PersonaError, match=rf"^{path}:2: greeting: unknown macro \{{\{{random\}}\}}"):
        load_persona_file(path)


def test_missing_name(tmp_path: Path) -> None:
    path = write(tmp_path, "description: nameless\n")
    with pytest.raises(PersonaError, match=rf"^{path}:1: name: Field required$"):
        load_persona_file(path)


def test_tab_indentation_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "name: Kit\nsampling:\n\ttemperature: 0.5\n")
    with pytest.raises(PersonaError) as info:
        load_persona_file(path)
    assert str(info.value) == f"{path}:3: tab in indentation; indent with spaces"


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "name: Kit\ngreeting: a\nsampling:\n  top_k: 4\n  top_k: 5\n")
    with pytest.raises(PersonaError) as info:
        load_persona_file(path)
    assert str(info.value) == f"{path}:5: duplicate key 'top_k' (first on line 4)"


def test_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: Kit\ngreeting: [unclosed\n")
    with pytest.raises(PersonaError, match=rf"^{path}:\d+: YAML syntax error: "):
        load_persona_file(path)


@pytest.mark.parametrize("text", ["", "- a list\n", "just text\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PersonaError, match=rf"^{path}:1: expected a mapping"):
        load_persona_file(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PersonaError, match="cannot read"):
        load_persona_file(tmp_path / "missing.yaml")
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"name: Caf\xe9\n")
    with pytest.raises(PersonaError, match="not UTF-8"):
        load_persona_file(bad)


def test_yaml_round_trip_keeps_everything_but_source() -> None:
    persona = Persona(
        name="Kit",
        description="line one\nline two",
        greeting="tab\there",
        example_dialogues=["{{user}}: a\n{{char}}: b"],
        sampling={"temperature": 1.1, "stop": ["x"]},
        wake_words=["fox"],
        tags=["t"],
        extensions={"a": {"b": [1, 2]}},
        source="somewhere.yaml",
    )
    text = persona_to_yaml(persona)
    assert "source" not in text
    assert "system_prompt" not in text  # defaults are left out
    assert "description: |-\n  line one\n  line two\n" in text
    assert parse_persona_yaml(text, "x.yaml") == persona


def test_lorebook_yaml_errors_have_lines(tmp_path: Path) -> None:
    lore_dir = tmp_path / "lorebooks"
    lore_dir.mkdir()
    path = lore_dir / "forest.yaml"
    path.write_text("description: woods\nentries:\n  - keys: [tree]\n    content: Trees.\n    priority: high\n")
    with pytest.raises(PersonaError, match=rf"^{path}:5: entries.0.priority: Input should be a valid integer"):
        load_lorebook_file(path)
    path.write_text("entries:\n  - keys: [tree]\n    content: Trees are {{char}}'s friends.\n")
    book = load_lorebook_file(path)
    assert book.name == "forest"
    assert book.entries[0].keys == ["tree"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("top_p", "0.0"), ("temperature", "9"), ("min_p", "-0.1"), ("repeat_penalty", "0.1"), ("max_tokens", "0")],
)
def test_out_of_range_sampling_is_refused_at_load_naming_the_field(tmp_path: Path, field: str, value: str) -> None:
    """The same bounds as the engine's last check: a persona that loads is one that generates."""
    from engine.sampling import SamplingParams

    path = tmp_path / "p.yaml"
    path.write_text(f"name: Odd\nsampling:\n  {field}: {value}\n")
    with pytest.raises(PersonaError) as info:
        load_persona_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: sampling.{field}: ") and "\n" not in message
    with pytest.raises(Exception, match=field):  # the engine refuses the same value
        SamplingParams().merged({field: float(value)}).validated()
