"""Who speaks in a room with a cast: pure policy, with randomness passed in.

A room's cast is one or more personas. One of them answers a user message, or up to
``group_replies`` of them, and with ``group_chain`` they may answer each other a few turns
more (a user speaking always ends that). Characters a user addresses (by name, by replying
to one of their messages, or with ``persona speak``) answer first. The rest are drawn by
``group_mode``:

- ``natural`` (SillyTavern's): in random order, each character speaks when a draw falls
  under its ``talkativeness``; if nobody does, one is picked anyway. The character who just
  spoke is left out unless it is the only one.
- ``list``: round robin in cast order, starting after the last speaker.
- ``random``: uniformly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

GROUP_MODES = ("natural", "list", "random")
DEFAULT_GROUP_MODE = "natural"
MAX_GROUP_REPLIES = 8  # one message never fans out into more replies than this
MAX_GROUP_CHAIN = 8  # nor into longer exchanges between characters
MAX_CAST = 15  # Character-Engine's limit; each member has its own cached prompt state


@dataclass(frozen=True)
class Member:
    """A cast member as the policy sees it: its key, the names it answers to, how chatty it is."""

    key: str
    name: str
    talkativeness: float = 0.5
    wake_words: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.wake_words)


@dataclass
class GroupPlan:
    """The characters still to answer the message that started this turn, and the chain left."""

    queue: list[str] = field(default_factory=list)
    chain_left: int = 0


def _mention(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)


def named_in(text: str, members: Sequence[Member]) -> list[str]:
    """Keys of the members ``text`` names (name or wake word, whole words), in order of first mention."""
    found: list[tuple[int, str]] = []
    for member in members:
        positions = [m.start() for name in member.names if name for m in [_mention(name).search(text)] if m]
        if positions:
            found.append((min(positions), member.key))
    return [key for _, key in sorted(found)]


def choose_speakers(
    mode: str,
    members: Sequence[Member],
    *,
    text: str,
    last_speaker: str | None,
    count: int,
    rng: random.Random,
    addressed: Sequence[str] = (),
) -> list[str]:
    """Keys of the characters who answer ``text``, at most ``count`` (at least one), addressed ones first."""
    if not members:
        return []
    count = max(1, count)
    keys = [member.key for member in members]
    chosen: list[str] = []
    for key in [*addressed, *named_in(text, members)]:
        if key in keys and key not in chosen:
            chosen.append(key)
    rest = [member for member in members if member.key not in chosen]
    if len(chosen) < count and rest:
        chosen.extend(_drawn(mode, rest, keys, last_speaker, rng, nobody_yet=not chosen))
    return chosen[:count]


def _drawn(
    mode: str, rest: list[Member], cast_order: list[str], last: str | None, rng: random.Random, *, nobody_yet: bool
) -> list[str]:
    """The remaining members in the order ``mode`` draws them (natural: only those who speak up)."""
    if mode == "list":
        start = cast_order.index(last) + 1 if last in cast_order else 0
        order = cast_order[start:] + cast_order[:start]
        by_key = {member.key for member in rest}
        return [key for key in order if key in by_key]
    if mode == "random":
        return [member.key for member in rng.sample(rest, len(rest))]
    pool = [member for member in rest if member.key != last] or rest
    shuffled = rng.sample(pool, len(pool))
    eager = [member.key for member in shuffled if rng.random() < member.talkativeness]
    if not eager and nobody_yet:
        eager = [shuffled[0].key]
    return eager


__all__ = [
    "DEFAULT_GROUP_MODE",
    "GROUP_MODES",
    "MAX_CAST",
    "MAX_GROUP_CHAIN",
    "MAX_GROUP_REPLIES",
    "GroupPlan",
    "Member",
    "choose_speakers",
    "named_in",
]
