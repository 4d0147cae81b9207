"""The Persona model: rendering order, skipping empty parts, wake words, sampling."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from personas import DEFAULT_SYSTEM_PROMPT, Persona, SamplingOverride


def full_persona() -> Persona:
    return Persona(
        name="Kit",
        description="{{char}} is a fox.",
        personality="sly",
        scenario="{{user}} meets {{char}} in a forest.",
        greeting="Hello {{user}}!",
        example_dialogues=["{{user}}: hi\n{{char}}: hey", "  ", "{{user}}: bye\n{{char}}: see ya"],
        system_prompt="You are {{char}}.",
        post_history_instructions="Stay as {{char}}, talking to {{user}}.",
    )


def test_render_system_puts_parts_in_order() -> None:
    text = full_persona().render_system("Sam", lore_before="LORE-B {{char}}", lore_after="LORE-A {{user}}")
    order = [
        "You are Kit.",
        "LORE-B Kit",
        "Kit is a fox.",
        "Kit's personality: sly",
        "Scenario: Sam meets Kit in a forest.",
        "LORE-A Sam",
        "Example 1:\nSam: hi\nKit: hey",
        "Example 2:\nSam: bye\nKit: see ya",
    ]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
    assert "Example 3" not in text  # the blank example was skipped
    assert "{{" not in text


def test_render_system_skips_empty_parts() -> None:
    text = Persona(name="Min", system_prompt="Be {{char}}.").render_system("Sam")
    assert text == "Be Min."


def test_greeting_and_post_history() -> None:
    persona = full_persona()
    assert persona.render_greeting("Sam") == "Hello Sam!"
    assert persona.render_post_history("Sam") == "Stay as Kit, talking to Sam."
    assert Persona(name="Q").render_post_history("Sam") == ""


def test_defaults_and_crlf_normalized() -> None:
    persona = Persona(name="  Kit  ", description="a\r\nb")
    assert persona.name == "Kit"
    assert persona.description == "a\nb"
    assert persona.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert persona.greeting == ""


@pytest.mark.parametrize("name", ["", "   "])
def test_name_must_not_be_empty(name: str) -> None:
    with pytest.raises(ValidationError, match="name must not be empty"):
        Persona(name=name)


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Persona(name="X", favourite_colour="red")


def test_effective_wake_words() -> None:
    assert Persona(name="Kit").effective_wake_words == ["Kit"]
    assert Persona(name="Kit", wake_words=[]).effective_wake_words == ["Kit"]
    assert Persona(name="Kit", wake_words=["fox", " "]).effective_wake_words == ["fox"]


def test_sampling_as_dict_has_only_set_fields() -> None:
    sampling = SamplingOverride(temperature=0.9, stop=["\nUser:"])
    assert sampling.as_dict() == {"temperature": 0.9, "stop": ["\nUser:"]}
    assert SamplingOverride().as_dict() == {}
    with pytest.raises(ValidationError):
        SamplingOverride(top_p=1.5)
    with pytest.raises(ValidationError):
        SamplingOverride(seed=3)


def test_source_is_not_part_of_equality_or_export() -> None:
    a = Persona(name="Kit", source="a.yaml")
    b = Persona(name="Kit", source="b.yaml")
    assert a == b
    assert "source" not in a.model_dump()
    assert a != Persona(name="Kat")


def test_preferred_model_is_optional_and_blank_means_none() -> None:
    assert Persona(name="Kit").model is None
    assert Persona(name="Kit", model="  gemma-3-270m ").model == "gemma-3-270m"
    assert Persona(name="Kit", model="   ").model is None
    with pytest.raises(ValidationError, match="one line"):
        Persona(name="Kit", model="a\nb")
