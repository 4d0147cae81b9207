"""Strict YAML reading that remembers where every key is.

PyYAML silently keeps the last of duplicate keys and gives no line numbers once data
is constructed. Persona files are hand-written, so we reject duplicates and tabs in
indentation and keep a map from each key path to its line, for one-line errors like
``personas/bad.yaml:7: sampling.temperature: Input should be a valid number``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from errors import PersonaError

MAX_YAML_BYTES = 2 * 1024 * 1024
LinePath = tuple[str | int, ...]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader; duplicate keys are caught while walking the node tree, before construction."""


def _walk(node: Node, path: LinePath, lines: dict[LinePath, int], where: str) -> None:
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise PersonaError(f"{where}:{line}: keys must be plain text")
            key = key_node.value
            if key == "<<":  # merge key: its own keys are checked where they are defined
                _walk(value_node, path, lines, where)
                continue
            if key in seen:
                raise PersonaError(f"{where}:{line}: duplicate key '{key}' (first on line {seen[key]})")
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, where)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, where)


def _check_tabs(text: str, where: str) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent and line.strip():
            raise PersonaError(f"{where}:{number}: tab in indentation; indent with spaces")


_UNQUOTED_MACRO = re.compile(r"^[^#\n]*?:[ \t]+\{\{", re.MULTILINE)


def _macro_hint(text: str) -> str:
    """Why a card-style value broke the file: YAML reads an unquoted ``{{char}} …`` as a mapping."""
    match = _UNQUOTED_MACRO.search(text)
    if match is None:
        return ""
    number = text.count("\n", 0, match.start()) + 1
    return f" (line {number}: a value that starts with {{{{ must be quoted, e.g. \"{{{{char}}}} is …\")"


def parse_yaml(text: str, where: str) -> tuple[Any, dict[LinePath, int]]:
    """Parse one YAML document; returns (data, key path -> line). Raises PersonaError."""
    _check_tabs(text, where)
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[LinePath, int] = {(): node.start_mark.line + 1}
        _walk(node, (), lines, where)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise PersonaError(f"{where}{line}: YAML syntax error: {problem}{_macro_hint(text)}") from None
    except yaml.YAMLError as exc:
        raise PersonaError(f"{where}: YAML syntax error: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()


def read_text(path: Path, limit: int = MAX_YAML_BYTES) -> str:
    """A small UTF-8 text file, or PersonaError naming it."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise PersonaError(f"{path}: file is too large ({size} bytes; limit {limit})")
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PersonaError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PersonaError(f"{path}: cannot read: {exc.strerror or exc}") from None


def line_for(lines: dict[LinePath, int], loc: tuple[Any, ...]) -> int:
    """The line of the deepest known key on ``loc``; unknown fields point at their parent."""
    for end in range(len(loc), -1, -1):
        if tuple(loc[:end]) in lines:
            return lines[tuple(loc[:end])]
    return 1


def validation_message(exc: ValidationError, where: str, lines: dict[LinePath, int]) -> str:
    """One line for the first pydantic error: ``file:line: field.path: message``."""
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    field = ".".join(str(part) for part in loc) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}:{line_for(lines, loc)}: {field}: {message}{more}"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line text as ``|`` blocks so exported personas stay hand-editable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and "\t" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """YAML text in the key order given, unicode kept, long text as blocks."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)
