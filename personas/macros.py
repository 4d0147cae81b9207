"""Prompt macros: ``{{char}}``, ``{{user}}`` and ``{{original}}``.

Only these three exist. Anything else in double braces is a typo or a macro from
another tool we do not emulate, so it is reported when the file loads (not mid-chat).
Names match case-insensitively (``{{Char}}``, ``{{USER}}``), as SillyTavern does.
"""

from __future__ import annotations

import re

from errors import PersonaError

KNOWN_MACROS = ("char", "user", "original")
_MACRO = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def unknown_macros(text: str) -> list[str]:
    """The unknown macro names in ``text``, in order of first appearance."""
    found: list[str] = []
    for match in _MACRO.finditer(text):
        name = match.group(1)
        if name.lower() not in KNOWN_MACROS and name not in found:
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


def render_macros(text: str, *, char: str, user: str, original: str = "") -> str:
    """Replace the macros in ``text``; ``original`` is itself a template (the default system prompt)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).lower()
        if name == "char":
            return char
        if name == "user":
            return user
        if name == "original":
            return render_macros(original, char=char, user=user) if original else ""
        raise PersonaError(macro_problem(match.group(0)) or f"unknown macro {match.group(0)}")

    return _MACRO.sub(replace, text)
