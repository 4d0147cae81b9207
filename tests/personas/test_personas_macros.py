"""Macros: {{char}}, {{user}}, {{original}}, case-insensitive; unknown ones fail at load time."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from errors import PersonaError
from personas import DEFAULT_SYSTEM_PROMPT, Persona, check_macros, render_macros
from personas.macros import unknown_macros


def test_replaces_char_and_user_in_any_case() -> None:
    text = "{{char}} greets {{user}}; {{Char}} and {{USER}} and {{ char }}"
    assert render_macros(text, char="Ann", user="Bob") == "Ann greets Bob; Ann and Bob and Ann"


def test_original_expands_to_the_rendered_default_prompt() -> None:
    out = render_macros("{{original}} Also rhyme.", char="Ann", user="Bob", original="Be {{char}} for {{user}}.")
    assert out == "Be Ann for Bob. Also rhyme."


def test_unknown_macro_is_named() -> None:
    assert unknown_macros("hi {{random}} {{char}} {{time}} {{random}}") == ["random", "time"]
    with pytest.raises(PersonaError, match=r"greeting: unknown macro \{\{random\}\}"):
        check_macros("{{random}}", "greeting")
    with pytest.raises(PersonaError, match=r"\{\{nope\}\}"):
        render_macros("{{nope}}", char="a", user="b")


def test_persona_rejects_unknown_macro_when_built() -> None:
    with pytest.raises(ValidationError, match=r"unknown macro \{\{mood\}\}"):
        Persona(name="X", description="feels {{mood}}")
    with pytest.raises(ValidationError, match=r"item 1: unknown macro \{\{bad\}\}"):
        Persona(name="X", example_dialogues=["ok {{user}}", "{{bad}}"])


def test_persona_original_macro_in_system_prompt() -> None:
    persona = Persona(name="Kit", system_prompt="{{ORIGINAL}} Speak like a pirate.")
    expected = render_macros(DEFAULT_SYSTEM_PROMPT, char="Kit", user="Sam") + " Speak like a pirate."
    assert persona.render_system("Sam") == expected
    assert "{{" not in persona.render_system("Sam")
