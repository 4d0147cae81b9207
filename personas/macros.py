"""Prompt macros: ``{{char}}``, ``{{user}}``, ``{{original}}``, and SillyTavern's common extras.

Character cards from SillyTavern use more than the three basics, and a card that is
refused at import is a persona the user can't have. So these work too:

- ``{{// a note}}`` and ``{{noop}}``: nothing; ``{{newline}}``: a line break;
  ``{{trim}}``: removes the whitespace around it.
- ``{{random:a,b,c}}``, ``{{random::a::b}}``, ``{{pick::a::b}}``: one of the options;
  ``{{roll:d20}}``, ``{{roll:2d6+1}}``: a dice roll.

SillyTavern re-rolls ``random`` on every message. hearth picks once per persona and
macro (a hash, not a random draw), because a prompt that changes every turn would make
every turn re-evaluate the whole prompt (README "Performance").

Anything else in double braces is a typo or a macro from another tool we do not
emulate, so it is reported when the file loads (not mid-chat). Names match
case-insensitively (``{{Char}}``, ``{{USER}}``), as SillyTavern does.
"""

from __future__ import annotations

import hashlib
import re

from errors import PersonaError

KNOWN_MACROS = ("char", "user", "original", "newline", "trim", "noop", "//…", "random:…", "pick::…", "roll:…")
_MACRO = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PLAIN = {"char", "user", "original", "newline", "trim", "noop"}
_CHOICE = re.compile(r"(random|pick)\s*(::?)(.*)", re.IGNORECASE | re.DOTALL)
_ROLL = re.compile(r"roll(?:\s*:\s*|\s+)(?:(\d*)d)?(\d+)\s*(?:([+-])\s*(\d+))?", re.IGNORECASE)
_TRIM = "\x00trim\x00"
_MAX_DICE = 100


def _known(name: str) -> bool:
    lowered = name.lower()
    if lowered in _PLAIN or name.startswith("//"):
        return True
    choice = _CHOICE.fullmatch(name)
    if choice:
        return bool(_options(choice))
    roll = _ROLL.fullmatch(name)
    return roll is not None and _dice(roll) is not None


def _options(choice: re.Match[str]) -> list[str]:
    separator, body = choice.group(2), choice.group(3)
    return [option.strip() for option in body.split("::" if separator == "::" else ",")] if body.strip() else []


def _dice(roll: re.Match[str]) -> tuple[int, int, int] | None:
    count = int(roll.group(1) or 1)
    sides = int(roll.group(2))
    bonus = int(roll.group(4) or 0) * (-1 if roll.group(3) == "-" else 1)
    if not (1 <= count <= _MAX_DICE and sides >= 1):
        return None
    return count, sides, bonus


def unknown_macros(text: str) -> list[str]:
    """The unknown macro names in ``text``, in order of first appearance."""
    found: list[str] = []
    for match in _MACRO.finditer(text):
        name = match.group(1)
        if not _known(name) and name not in found:
            found.append(name)
    return found


def macro_problem(text: str) -> str | None:
    """A one-line description of the first unknown macro, or None when ``text`` is clean."""
    bad = unknown_macros(text)
    if not bad:
        return None
    known = ", ".join("{{" + name + "}}" for name in KNOWN_MACROS)
    return f"unknown macro {{{{{bad[0]}}}}} (known: {known})"


def check_macros(text: str, where: str = "") -> None:
    """Raise PersonaError naming the first unknown macro in ``text``."""
    problem = macro_problem(text)
    if problem:
        raise PersonaError(f"{where}: {problem}" if where else problem)


def macro_checked(text: str) -> str:
    """``text`` unchanged, or ValueError naming its first unknown macro: a pydantic validator's shape."""
    problem = macro_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def _stable_number(char: str, macro: str, occurrence: int, modulo: int) -> int:
    digest = hashlib.sha256(f"{char}\x00{macro}\x00{occurrence}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % modulo


def render_macros(text: str, *, char: str, user: str, original: str = "") -> str:
    """Replace the macros in ``text``; ``original`` is itself a template (the default system prompt)."""
    seen: dict[str, int] = {}

    def replace(match: re.Match[str]) -> str:
        raw = match.group(1)
        name = raw.lower()
        occurrence = seen[raw] = seen.get(raw, -1) + 1  # the same macro twice may pick twice
        if name == "char":
            return char
        if name == "user":
            return user
        if name == "original":
            return render_macros(original, char=char, user=user) if original else ""
        if name == "newline":
            return "\n"
        if name == "trim":
            return _TRIM
        if name == "noop" or raw.startswith("//"):
            return ""
        if choice := _CHOICE.fullmatch(raw):
            options = _options(choice)
            if options:
                return options[_stable_number(char, raw, occurrence, len(options))]
        if (roll := _ROLL.fullmatch(raw)) and (dice := _dice(roll)):
            count, sides, bonus = dice
            faces = (_stable_number(char, raw, occurrence * _MAX_DICE + i, sides) + 1 for i in range(count))
            return str(sum(faces) + bonus)
        raise PersonaError(macro_problem(match.group(0)) or f"unknown macro {match.group(0)}")

    rendered = _MACRO.sub(replace, text)
    return re.sub(rf"\s*{re.escape(_TRIM)}\s*", "", rendered) if _TRIM in rendered else rendered
