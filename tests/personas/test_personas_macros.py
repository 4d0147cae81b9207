"""Macros: {{char}}, {{user}}, {{original}} and SillyTavern's extras; unknown ones fail at load time."""

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


def test_sillytavern_formatting_macros() -> None:
    text = "A{{newline}}B {{// a note for the card's author}}C{{noop}}  \n {{trim}} \n D"
    assert render_macros(text, char="Ann", user="Bob") == "A\nB CD"


def test_random_and_pick_choose_an_option_and_keep_it() -> None:
    """One pick per persona and macro: the prompt prefix must not change from turn to turn."""
    text = "{{random:sun,rain,fog}} {{random::a, b::c}} {{pick::x::y}}"
    first = render_macros(text, char="Ann", user="Bob")
    weather, letters, pick = first.split(" ", 2)
    assert weather in {"sun", "rain", "fog"} and letters in {"a, b", "c"} and pick in {"x", "y"}
    assert render_macros(text, char="Ann", user="Someone else") == first, "not per speaker"
    picks = {render_macros("{{random:1,2,3,4,5,6,7,8}}", char=name, user="Bob") for name in "ABCDEFGHIJ"}
    assert len(picks) > 1, "different personas pick differently"
    repeated = render_macros(" ".join(["{{random:1,2,3,4,5,6,7,8}}"] * 8), char="Ann", user="Bob")
    assert len(set(repeated.split())) > 1, "each occurrence picks on its own"


def test_rolls_stay_within_their_dice() -> None:
    for formula, low, high in [("d20", 1, 20), ("2d6+1", 3, 13), (" 3d6 - 2", 1, 16), ("20", 1, 20)]:
        for name in "ABCDEFGH":
            value = int(render_macros(f"{{{{roll:{formula}}}}}", char=name, user="Bob"))
            assert low <= value <= high, formula
    assert render_macros("{{roll 6}}", char="A", user="B").isdigit()


def test_malformed_sillytavern_macros_are_named() -> None:
    assert unknown_macros("{{random:}} {{roll:d0}} {{roll:0d6}} {{roll:101d6}} {{pick}}") == [
        "random:",
        "roll:d0",
        "roll:0d6",
        "roll:101d6",
        "pick",
    ]
