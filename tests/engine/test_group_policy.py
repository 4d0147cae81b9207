"""Who speaks in a cast (engine.group): pure policy, randomness passed in as a seeded Random."""

from __future__ import annotations

import random
from collections import Counter

from engine.group import Member, choose_speakers, named_in

EMBER = Member("ember", "Ember", 0.5)
BRAM = Member("bram", "Bram", 0.5, ("blacksmith",))
SOL = Member("sol", "Sol", 0.5)
CAST = [EMBER, BRAM, SOL]


def pick(mode: str, text: str = "hello all", last: str | None = None, count: int = 1, seed: int = 1, **kw):
    return choose_speakers(mode, CAST, text=text, last_speaker=last, count=count, rng=random.Random(seed), **kw)


def test_named_characters_answer_first_in_order_of_mention():
    assert named_in("Sol, and you too ember: what now? Ember!", CAST) == ["sol", "ember"]
    assert named_in("the Blacksmith knows", CAST) == ["bram"], "wake words count as names"
    assert named_in("Solomon and embers", CAST) == [], "whole words only"
    for mode in ("natural", "list", "random"):
        assert pick(mode, "Bram, what do you think?", last="bram") == ["bram"], mode
        assert pick(mode, "Sol and Ember, hi", count=3)[:2] == ["sol", "ember"], mode


def test_addressed_character_goes_before_named_ones():
    assert pick("natural", "Ember, say something", addressed=["sol"], count=2) == ["sol", "ember"]


def test_list_mode_goes_round_robin_after_the_last_speaker():
    assert pick("list", last=None) == ["ember"]
    assert pick("list", last="ember") == ["bram"]
    assert pick("list", last="sol") == ["ember"]
    assert pick("list", last="bram", count=3) == ["sol", "ember", "bram"]


def test_random_mode_is_uniform():
    counts = Counter(pick("random", seed=seed)[0] for seed in range(3000))
    assert set(counts) == {"ember", "bram", "sol"}
    assert all(900 < n < 1100 for n in counts.values()), counts


def test_natural_mode_never_repeats_the_last_speaker_unless_alone():
    for seed in range(300):
        assert pick("natural", last="bram", seed=seed) != ["bram"]
    alone = choose_speakers("natural", [BRAM], text="hi", last_speaker="bram", count=1, rng=random.Random(0))
    assert alone == ["bram"]


def test_natural_mode_follows_talkativeness():
    shy, chatty = Member("shy", "Shy", 0.0), Member("chatty", "Chatty", 1.0)
    cast = [shy, chatty, Member("mid", "Mid", 0.5)]
    counts = Counter(
        choose_speakers("natural", cast, text="hi", last_speaker=None, count=1, rng=random.Random(seed))[0]
        for seed in range(600)
    )
    assert counts["shy"] == 0, "talkativeness 0 speaks only when nobody else would"
    assert counts["chatty"] > counts["mid"] > 0, counts
    everyone_shy = [Member("a", "A", 0.0), Member("b", "B", 0.0)]
    assert choose_speakers("natural", everyone_shy, text="hi", last_speaker="a", count=1, rng=random.Random(3)) == ["b"]


def test_group_replies_caps_how_many_answer():
    for mode in ("natural", "list", "random"):
        for count in (1, 2, 3):
            chosen = pick(mode, "Ember Bram Sol", count=count)
            assert len(chosen) == count and len(set(chosen)) == count, (mode, chosen)
    assert len(pick("list", count=10)) == 3, "never more than the cast"
