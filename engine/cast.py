"""A room's cast and group settings, as kept in its stored settings.

The cast is a list of persona keys in ``settings.extra["cast"]``; the room's ``persona`` is
always its first member, so everything that reads one persona (a room with a cast of one,
``persona show``, the preferred model) keeps working. ``group_mode``, ``group_replies`` and
``group_chain`` sit beside it in ``extra``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.group import DEFAULT_GROUP_MODE, GROUP_MODES, MAX_CAST, MAX_GROUP_CHAIN, MAX_GROUP_REPLIES
from errors import CommandError
from memory import RoomSettings

GROUP_SETTINGS = ("group_mode", "group_replies", "group_chain")
_COUNT_BOUNDS = {"group_replies": (1, MAX_GROUP_REPLIES), "group_chain": (0, MAX_GROUP_CHAIN)}  # low = default


@dataclass(frozen=True)
class GroupOptions:
    mode: str = DEFAULT_GROUP_MODE
    replies: int = 1  # characters answering one user message, at most
    chain: int = 0  # further turns characters may answer each other


def cast_keys(settings: RoomSettings, default_persona: str) -> list[str]:
    """The room's cast, first member first; one persona when no cast was ever formed."""
    cast = settings.extra.get("cast")
    if isinstance(cast, list) and len(cast) > 1 and all(isinstance(key, str) for key in cast):
        return list(dict.fromkeys(cast))
    return [settings.persona or default_persona]


def cast_changes(settings: RoomSettings, cast: list[str]) -> dict[str, Any]:
    """The settings update that stores ``cast`` (a single member is stored as the plain persona)."""
    if not cast:
        raise CommandError("a room needs at least one persona")
    if len(cast) > MAX_CAST:
        raise CommandError(f"a cast has at most {MAX_CAST} characters")
    extra = dict(settings.extra)
    if len(cast) > 1:
        extra["cast"] = cast
    else:
        extra.pop("cast", None)
    return {"persona": cast[0], "extra": extra}


def group_options(settings: RoomSettings) -> GroupOptions:
    """The room's group settings; anything unreadable falls back to its default."""
    extra = settings.extra
    mode = extra.get("group_mode")
    return GroupOptions(
        mode=mode if mode in GROUP_MODES else DEFAULT_GROUP_MODE,
        replies=_bounded(extra.get("group_replies"), *_COUNT_BOUNDS["group_replies"]),
        chain=_bounded(extra.get("group_chain"), *_COUNT_BOUNDS["group_chain"]),
    )


def _bounded(value: object, low: int, high: int) -> int:
    """``value`` within [low, high]; ``low``, each count's default, when it is not a number."""
    return min(max(value, low), high) if isinstance(value, int) and not isinstance(value, bool) else low


def parse_group_setting(key: str, raw: str) -> str | int:
    """A ``settings set group_*`` value, checked; CommandError names what is wrong."""
    if key == "group_mode":
        if raw not in GROUP_MODES:
            raise CommandError(f"group_mode must be one of {', '.join(GROUP_MODES)}, not {raw!r}")
        return raw
    low, high = _COUNT_BOUNDS[key]
    try:
        value = int(raw)
    except ValueError:
        raise CommandError(f"{key} must be a whole number from {low} to {high}, not {raw!r}") from None
    if not low <= value <= high:
        raise CommandError(f"{key} must be from {low} to {high}, not {value}")
    return value


__all__ = ["GROUP_SETTINGS", "GroupOptions", "cast_changes", "cast_keys", "group_options", "parse_group_setting"]
