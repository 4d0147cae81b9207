"""How a cast's character is written into Matrix event content, and read back (no homeserver)."""

from __future__ import annotations

from adapters.matrix_characters import CHARACTER_KEY, PROFILE_KEY, Character, character_content, character_of
from adapters.matrix_mapping import answered_event
from adapters.matrix_render import edit_content, text_content
from adapters.recent_ids import RecentMap

EMBER = Character("Ember", "ember", "mxc://example.org/ember")


def test_a_character_message_opens_with_its_bold_name_and_carries_the_character() -> None:
    content = character_content("Hello *there*", "m.text", EMBER)

    assert content["body"] == "Ember: Hello *there*"
    assert content["formatted_body"] == "<p><strong data-mx-profile-fallback>Ember: </strong>Hello <em>there</em></p>"
    assert content["format"] == "org.matrix.custom.html"
    assert content[CHARACTER_KEY] == {"name": "Ember", "key": "ember"}
    assert content[PROFILE_KEY] == {
        "id": "ember",
        "displayname": "Ember",
        "avatar_url": "mxc://example.org/ember",
        "has_fallback": True,
    }
    assert content["m.mentions"] == {}


def test_plain_text_still_gets_the_bold_name_and_no_avatar_means_no_avatar_field() -> None:
    content = character_content("just words", "m.notice", Character("Moss", "moss"))

    assert content["msgtype"] == "m.notice"
    assert content["body"] == "Moss: just words"
    assert content["formatted_body"] == "<p><strong data-mx-profile-fallback>Moss: </strong>just words</p>"
    assert "avatar_url" not in content[PROFILE_KEY]


def test_a_reply_opening_with_a_block_gets_the_name_before_it() -> None:
    content = character_content("# Title\nbody", "m.text", EMBER)
    assert content["formatted_body"].startswith("<strong data-mx-profile-fallback>Ember: </strong><h1>Title</h1>")


def test_a_name_cannot_inject_html_or_ping_the_room() -> None:
    content = character_content("hi", "m.text", Character("<img src=x> @room", "odd"))

    assert "<img" not in content["formatted_body"]
    assert "&lt;img src=x&gt;" in content["formatted_body"]
    assert "@room" not in content["body"] and "@room" not in content[PROFILE_KEY]["displayname"]
    assert content[CHARACTER_KEY]["name"] == "<img src=x> @room", "the engine matches the name as it knows it"


def test_an_edit_carries_the_character_in_its_new_content() -> None:
    edit = edit_content("$original", character_content("more text", "m.text", EMBER))

    assert edit["m.new_content"]["body"] == "Ember: more text"
    assert edit["m.new_content"][CHARACTER_KEY]["name"] == "Ember"
    assert edit["m.new_content"][PROFILE_KEY]["displayname"] == "Ember"
    assert character_of(edit) == "Ember"


def test_the_character_is_read_back_from_content() -> None:
    assert character_of(character_content("hi", "m.text", EMBER)) == "Ember"
    assert character_of(text_content("hi")) is None, "a one-persona message names no character"
    assert character_of({CHARACTER_KEY: {"name": "  "}}) is None
    assert character_of({CHARACTER_KEY: "Ember"}) is None


def test_a_threads_automatic_fallback_reply_is_not_a_chosen_reply() -> None:
    chosen = {"m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}
    in_thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "m.in_reply_to": {"event_id": "$a"}}}
    falling_back = {"m.relates_to": {**in_thread["m.relates_to"], "is_falling_back": True}}

    assert answered_event(chosen) == "$a"
    assert answered_event(in_thread) == "$a"
    assert answered_event(falling_back) is None


def test_recent_map_keeps_only_the_newest_keys() -> None:
    names: RecentMap[str, str] = RecentMap(2)
    names["$1"], names["$2"], names["$3"] = "Ember", "Moss", "Ember"

    assert names.get("$1") is None and "$1" not in names
    assert names.get("$2") == "Moss" and names.get("$3") == "Ember"
    assert len(names) == 2
