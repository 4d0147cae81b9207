"""Lore activation (scan depth, case, whole words, selective, constant, budget, order) and conversions."""

from __future__ import annotations

from typing import Any

import pytest

from errors import PersonaError
from personas import (
    Lorebook,
    LoreEntry,
    activate,
    import_world_info,
    lore_from_character_book,
    lore_to_character_book,
    parse_lorebook,
    split_by_position,
)


def book(*entries: LoreEntry, **fields: Any) -> Lorebook:
    return Lorebook(name=fields.pop("name", "test"), entries=list(entries), **fields)


def entry(uid: int, keys: list[str], **fields: Any) -> LoreEntry:
    return LoreEntry(uid=uid, keys=keys, content=fields.pop("content", f"content {uid}"), **fields)


def uids(result: list) -> list[int]:
    return [active.entry.uid for active in result]


def test_key_in_recent_message_activates(count_words) -> None:
    lore = book(entry(1, ["dragon"]), entry(2, ["castle"]))
    assert uids(activate([lore], ["I see a Dragon!"], count_words)) == [1]
    assert activate([lore], ["nothing here"], count_words) == []


def test_scan_depth_limits_how_far_back_keys_count(count_words) -> None:
    lore = book(entry(1, ["dragon"]), scan_depth=2)
    old = ["a dragon appears", "hello", "how are you"]
    assert activate([lore], old, count_words) == []
    assert uids(activate([lore], old[:2], count_words)) == [1]
    deep = book(entry(1, ["dragon"], scan_depth=3), scan_depth=1)  # the entry's depth overrides the book's
    assert uids(activate([deep], old, count_words)) == [1]
    zero = book(entry(1, ["dragon"]), entry(2, ["x"], constant=True), scan_depth=0)
    assert uids(activate([zero], ["dragon"], count_words)) == [2]


def test_case_sensitivity(count_words) -> None:
    lore = book(entry(1, ["Rex"], case_sensitive=True), entry(2, ["rex"]))
    assert uids(activate([lore], ["rex is here"], count_words)) == [2]
    assert uids(activate([lore], ["Rex is here"], count_words)) == [1, 2]


def test_whole_words(count_words) -> None:
    lore = book(entry(1, ["cat"], match_whole_words=True), entry(2, ["cat"]))
    assert uids(activate([lore], ["a concatenation"], count_words)) == [2]
    assert uids(activate([lore], ["the cat, sleeping"], count_words)) == [1, 2]
    multi = book(entry(3, ["safe haven"], match_whole_words=True))
    assert uids(activate([multi], ["a Safe Haven."], count_words)) == [3]


def test_regex_keys(count_words) -> None:
    lore = book(entry(1, ["/dra(g|k)on/i"]))
    assert uids(activate([lore], ["DRAKON!"], count_words)) == [1]
    assert activate([lore], ["dragoon"], count_words) == []


@pytest.mark.parametrize(
    ("logic", "text", "expected"),
    [
        ("and_any", "sword and fire", [1]),
        ("and_any", "sword only", []),
        ("and_all", "sword fire ice", [1]),
        ("and_all", "sword fire", []),
        ("not_any", "sword only", [1]),
        ("not_any", "sword fire", []),
        ("not_all", "sword fire", [1]),
        ("not_all", "sword fire ice", []),
    ],
)
def test_selective_needs_secondary_keys(count_words, logic: str, text: str, expected: list[int]) -> None:
    lore = book(entry(1, ["sword"], selective=True, secondary_keys=["fire", "ice"], selective_logic=logic))
    assert uids(activate([lore], [text], count_words)) == expected


def test_secondary_keys_ignored_when_not_selective(count_words) -> None:
    lore = book(entry(1, ["sword"], secondary_keys=["fire"]))
    assert uids(activate([lore], ["sword"], count_words)) == [1]


def test_constant_and_disabled(count_words) -> None:
    lore = book(entry(1, [], constant=True), entry(2, ["x"], constant=True, enabled=False), entry(3, ["x"]))
    assert uids(activate([lore], [], count_words)) == [1]
    assert uids(activate([lore], ["x"], count_words)) == [1, 3]


def test_budget_drops_lowest_priority_first(count_words) -> None:
    five = "one two three four five"
    lore = book(
        entry(1, ["k"], content=five, priority=5),
        entry(2, ["k"], content=five, priority=50),
        entry(3, ["k"], content=five, priority=20),
    )
    result = activate([lore], ["k"], count_words, budget=10)
    assert sorted(uids(result)) == [2, 3]
    assert [active.tokens for active in result] == [5, 5]
    assert uids(activate([lore], ["k"], count_words, budget=4)) == []
    lore.token_budget = 5  # the book's budget applies when none is given
    assert uids(activate([lore], ["k"], count_words)) == [2]


def test_budget_ties_go_to_higher_insertion_order(count_words) -> None:
    lore = book(entry(1, ["k"], insertion_order=10), entry(2, ["k"], insertion_order=90))
    assert uids(activate([lore], ["k"], count_words, budget=2)) == [2]


def test_skipped_big_entry_leaves_room_for_smaller(count_words) -> None:
    lore = book(entry(1, ["k"], content="a b c d e f", priority=99), entry(2, ["k"], content="a b", priority=1))
    assert uids(activate([lore], ["k"], count_words, budget=4)) == [2]


def test_output_order_is_deterministic(count_words) -> None:
    first = book(
        entry(1, ["k"], insertion_order=300, position="after_char"),
        entry(2, ["k"], insertion_order=200),
        entry(3, [], constant=True, insertion_order=900),
        entry(4, ["k"], insertion_order=100),
        name="a",
    )
    second = book(entry(1, ["k"], insertion_order=100), name="b")
    result = activate([first, second], ["k"], count_words)
    # before_char: constant first, then insertion order ascending, then book order; after_char last
    assert [(a.book, a.entry.uid) for a in result] == [("a", 3), ("a", 4), ("b", 1), ("a", 2), ("a", 1)]
    assert activate([first, second], ["k"], count_words) == result
    before, after = split_by_position(result)
    assert before == "content 3\n\ncontent 4\n\ncontent 1\n\ncontent 2"
    assert after == "content 1"


def test_entry_fields_validate() -> None:
    assert LoreEntry(keys="a, b ,,c", order=7).keys == ["a", "b", "c"]
    assert LoreEntry(order=7).insertion_order == 7
    with pytest.raises(ValueError, match=r"unknown macro \{\{when\}\}"):
        LoreEntry(content="{{when}}")
    with pytest.raises(ValueError):
        LoreEntry(position="top")


def test_import_world_info_real_fixture(eldoria_json: dict[str, Any], count_words) -> None:
    lore = import_world_info(eldoria_json, "Eldoria")
    assert lore.name == "Eldoria"
    assert [e.uid for e in lore.entries] == [0, 1, 2, 3]
    assert lore.entries[0].keys == ["eldoria", "wood", "forest", "magical forest"]
    assert lore.entries[1].keys == ["shadowfang", "beast", "monster", "monsters", "beasts"]
    assert lore.entries[2].keys == ["glade", "safe haven", "refuge"]
    assert all(e.position == "before_char" and e.insertion_order == 100 and e.enabled for e in lore.entries)
    assert lore.entries[1].content.startswith('{{user}}: "What are Shadowfangs?"')
    assert uids(activate([lore], ["Tell me about the shadowfang"], count_words)) == [1]


def test_import_world_info_field_mapping() -> None:
    data = {
        "entries": {
            "7": {
                "uid": 7,
                "key": ["a"],
                "keysecondary": ["b"],
                "selective": True,
                "selectiveLogic": 3,
                "constant": True,
                "order": 5,
                "position": 4,
                "disable": True,
                "caseSensitive": True,
                "matchWholeWords": None,
                "scanDepth": 2,
                "content": "c",
                "comment": "note",
            }
        }
    }
    got = import_world_info(data, "w").entries[0]
    assert got.model_dump() == {
        "uid": 7,
        "keys": ["a"],
        "secondary_keys": ["b"],
        "selective": True,
        "selective_logic": "and_all",
        "constant": True,
        "enabled": False,
        "case_sensitive": True,
        "match_whole_words": False,
        "insertion_order": 5,
        "priority": 10,
        "position": "after_char",
        "scan_depth": 2,
        "content": "c",
        "comment": "note",
        "extensions": {},
    }


@pytest.mark.parametrize("data", [{}, {"entries": 3}, {"entries": {"0": "text"}}])
def test_import_world_info_rejects_bad_data(data: dict[str, Any]) -> None:
    with pytest.raises(PersonaError, match=r"^w: "):
        import_world_info(data, "w")


def test_character_book_round_trip() -> None:
    lore = book(
        entry(1, ["a"], secondary_keys=["b"], selective=True, selective_logic="not_any", priority=3),
        entry(2, ["c"], match_whole_words=True, scan_depth=7, position="after_char", extensions={"x": 1}),
        name="World",
        description="d",
        scan_depth=6,
        token_budget=99,
    )
    exported = lore_to_character_book(lore)
    assert exported["entries"][1]["position"] == "after_char"
    assert exported["entries"][0]["extensions"]["selectiveLogic"] == 2
    assert lore_from_character_book(exported, "fallback") == lore


def test_parse_lorebook_detects_format(eldoria_json: dict[str, Any]) -> None:
    assert len(parse_lorebook(eldoria_json, "eldoria").entries) == 4
    cb = lore_to_character_book(book(entry(1, ["a"]), name="cb"))
    assert parse_lorebook(cb, "x").name == "cb"
    native = parse_lorebook({"entries": [{"keys": ["z"], "content": "zz"}]}, "native")
    assert native.name == "native"
    assert native.entries[0].keys == ["z"]
    with pytest.raises(PersonaError, match=r"entries.0.priority"):
        parse_lorebook({"entries": [{"priority": "high"}]}, "bad")
