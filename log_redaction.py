"""Keeping secrets out of the logs, whatever a library logs at DEBUG.

nio, discord.py, aiohttp and aiosqlite log requests, payloads and SQL parameters at DEBUG,
and hearth cannot vet every line they write. So a filter on the root logger's handlers
rewrites every record on its way out: each known secret (the config's tokens and passwords,
and tokens a client holds now, such as the one a Matrix password login produced) becomes
``***``, in the message and in any traceback text. Only ``bot.py`` installs it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from config import HearthConfig

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words; no real token is this short
# Values that name themselves as secrets, whoever holds them: `access_token=…` in a URL,
# `"password": "…"` in a JSON body, `Authorization: Bearer …` in a header.
_LABELLED = re.compile(
    r"""(?P<key>access_token["']?\s*[:=]\s*["']?|["'](?:password|token)["']\s*:\s*["']|Bearer\s+)"""
    r"""(?P<value>[^\s"'&,;}]{4,})""",
    re.IGNORECASE,
)


def config_secrets(config: HearthConfig) -> list[str]:
    """Every secret the config holds (``SecretStr`` fields), as plain strings."""
    values = [config.discord.token, config.matrix.password, config.matrix.access_token]
    values += [m.api_key for m in config.model.models]
    return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


@lru_cache(maxsize=64)
def _variants(secret: str) -> frozenset[str]:
    """The secret as a log line may spell it: raw, JSON-escaped, or URL-encoded.

    Cached: a live token is read for every record, and at DEBUG there are many records.
    """
    return frozenset({secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)})


class SecretRedactor(logging.Filter):
    """A handler filter that masks secrets in every record; never drops one."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._fixed: set[str] = set()
        self._sources: list[Callable[[], str | None]] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            self._fixed |= _variants(secret)

    def watch(self, source: Callable[[], str | None]) -> None:
        """Also mask whatever ``source()`` returns at the time of each record (a live token)."""
        self._sources.append(source)

    def secrets(self) -> list[str]:
        values = set(self._fixed)
        for source in self._sources:
            value = source()
            if value and len(value) >= MIN_SECRET_LENGTH:
                values |= _variants(value)
        return sorted(values, key=len, reverse=True)  # longest first, so no fragment is left behind

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            if secret in text:
                text = text.replace(secret, MASK)
        return _LABELLED.sub(lambda m: m.group("key") + MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it for logging to report
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def install(self, logger: logging.Logger) -> None:
        """Filter every handler of ``logger`` (handler filters also see records from child loggers)."""
        for handler in logger.handlers:
            if self not in handler.filters:
                handler.addFilter(self)


__all__ = ["MASK", "SecretRedactor", "config_secrets"]
