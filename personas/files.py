"""File helpers: safe names and all-or-nothing writes for imports."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

from errors import PersonaError


def slugify(name: str) -> str:
    """A file-name-safe, lowercase key for a persona or lorebook name."""
    slug = re.sub(r"[^\w-]+", "-", name.strip().lower()).strip("-._")
    return slug[:64] or "persona"


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{tag}")


def write_all(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write every file or none.

    All data goes to temp files first. Then existing targets are moved aside, the temp
    files renamed into place, and the backups deleted. If any step fails, files already
    placed are removed and the backups restored, so a failed import leaves the folder as
    it was.
    """
    temps: list[tuple[Path, Path]] = []
    backups: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path, data in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = _sibling(path, "tmp")
            temps.append((temp, path))
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for temp, path in temps:
            if path.is_file():
                backup = _sibling(path, "bak")
                os.replace(path, backup)
                backups.append((backup, path))
            os.replace(temp, path)
            placed.append(path)
    except OSError as exc:
        for path in placed:
            path.unlink(missing_ok=True)
        for backup, path in backups:
            os.replace(backup, path)
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        raise PersonaError(f"{exc.filename or 'import'}: cannot write: {exc.strerror or exc}") from None
    for backup, _ in backups:
        backup.unlink(missing_ok=True)
