"""Platform-neutral reply rendering: throttled streaming edits, safe splitting, defused pings.

Discord and Matrix both show a streamed reply by editing one message, and both limit
how often that may happen. The throttle takes its clock as a parameter, so tests drive
it with a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterable, Awaitable, Callable

from engine.reply import ReplyStream
from errors import HearthError, InternalError, UserError

log = logging.getLogger(__name__)

UNFINISHED_MARKER = " ▌"
ZERO_WIDTH_SPACE = "\u200b"
_MASS_MENTION = re.compile(r"@(everyone|here|room)\b", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(```|~~~)(.*)$")
EMPTY_REPLY = "*(no reply: the model had nothing to say)*"
ERROR_PREFIX = "⚠️ "


def queue_notice(position: int) -> str:
    return f"⏳ you're #{position} in line…"


def error_line(exc: BaseException) -> str:
    """One short line for the user; the traceback goes to the log, never to the chat."""
    if isinstance(exc, UserError):
        detail = str(exc)
    elif isinstance(exc, InternalError):
        detail = f"the reply failed: {exc}"
    else:
        detail = "the reply failed unexpectedly (details are in the log)"
    detail = " ".join(detail.split())
    return ERROR_PREFIX + (detail[:200] + "…" if len(detail) > 200 else detail)


def defuse_mentions(text: str) -> str:
    """Break ``@everyone``/``@here``/``@room`` so no client treats them as a ping."""
    return _MASS_MENTION.sub(lambda m: "@" + ZERO_WIDTH_SPACE + m.group(1), text)


def split_message(text: str, limit: int = 2000) -> list[str]:
    """Split into pieces of at most ``limit`` characters.

    Cuts prefer a paragraph break, then a line break, then a sentence end, then a space.
    A code fence open at a cut is closed at the end of one piece and reopened (with its
    language) at the start of the next, so every piece renders as valid markdown.
    """
    if limit < 20:
        raise ValueError("limit too small to split safely")
    pieces: list[str] = []
    rest = text
    reopen = ""
    while rest:
        rest = reopen + rest if reopen and not rest.startswith(reopen) else rest
        if len(rest) <= limit:
            pieces.append(rest)
            break
        fence_reserve = 8
        window = rest[: limit - fence_reserve]
        cut = _best_cut(window)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n")
        fence = _open_fence(head)
        if fence is not None:
            head = head + "\n```"
            reopen = f"```{fence}\n"
        else:
            reopen = ""
        pieces.append(head)
    return [p for p in pieces if p.strip()]


def _best_cut(window: str) -> int:
    minimum = len(window) // 3
    for pattern in ("\n\n", "\n"):
        index = window.rfind(pattern)
        if index >= minimum:
            return index + len(pattern)
    sentence = max(window.rfind(". "), window.rfind("! "), window.rfind("? "))
    if sentence >= minimum:
        return sentence + 2
    space = window.rfind(" ")
    if space >= minimum:
        return space + 1
    return len(window)


def _open_fence(text: str) -> str | None:
    """The language of a code fence left open at the end of ``text``, or None if all are closed."""
    language: str | None = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match:
            language = None if language is not None else match.group(2).strip()
    return language


class EditThrottle:
    """Allows at most one edit per ``interval`` seconds of ``clock`` time, and at most
    ``max_edits`` edits of one reply in all (None: no cap).

    The first update of a reply is a send, not an edit; every later one is an edit. One edit
    is always kept back for the final text, so once ``max_edits - 1`` interim edits were made
    ``ready()`` says no for the rest of the stream and ``stream_edits`` puts the whole reply
    in one last edit. Some clients stop loading a room whose messages were edited ~1,000 times.
    """

    def __init__(
        self, interval: float, clock: Callable[[], float] = time.monotonic, *, max_edits: int | None = None
    ) -> None:
        if max_edits is not None and max_edits < 1:
            raise ValueError("max_edits must be at least 1")
        self.interval = interval
        self.clock = clock
        self.max_edits = max_edits
        self.edits = 0  # updates made after the first (the first is the send)
        self._last: float | None = None

    @property
    def capped(self) -> bool:
        """True once only the final edit is left (interim edits stop)."""
        return self.max_edits is not None and self._last is not None and self.edits >= self.max_edits - 1

    def ready(self) -> bool:
        if self.capped:
            return False
        now = self.clock()
        return self._last is None or now - self._last >= self.interval

    def mark(self) -> None:
        """Record one update (a send the first time, an edit after)."""
        if self._last is not None:
            self.edits += 1
        self._last = self.clock()

    def wait_time(self) -> float:
        if self._last is None:
            return 0.0
        return max(0.0, self.interval - (self.clock() - self._last))


async def stream_edits(
    chunks: AsyncIterable[str],
    edit: Callable[[str], Awaitable[None]],
    throttle: EditThrottle,
    *,
    marker: str = UNFINISHED_MARKER,
    transform: Callable[[str], str] = defuse_mentions,
) -> str:
    """Edit as chunks arrive, no more than the throttle allows; the last edit has the full text.

    Interim edits end with ``marker`` so users see the reply is still being written; the
    final edit (always made, even when the throttle would refuse or its edit cap is reached)
    carries the finished text without it. Returns that final text.
    """
    text = ""
    shown = None
    async for chunk in chunks:
        text += chunk
        if throttle.ready() and text.strip():
            shown = transform(text) + marker
            await edit(shown)
            throttle.mark()
    final = transform(text.strip())
    if final and final != shown:
        await edit(final)
        throttle.mark()
    return final


async def keep_typing(send_typing: Callable[[], Awaitable[None]], until: asyncio.Event, every: float = 8.0) -> None:
    """Refresh a typing indicator until ``until`` is set (platform indicators expire by themselves)."""
    while not until.is_set():
        with contextlib.suppress(Exception):  # typing is cosmetic; never let it break a reply
            await send_typing()
        try:
            await asyncio.wait_for(until.wait(), every)
        except TimeoutError:
            continue


async def present_reply(
    reply: Awaitable[ReplyStream],
    show: Callable[[str], Awaitable[None]],
    throttle: EditThrottle,
    *,
    send_typing: Callable[[], Awaitable[None]],
    position: int = 0,
    typing_every: float = 8.0,
    label: str = "room",
    transport_errors: tuple[type[Exception], ...] = (),
) -> None:
    """Wait for a queued turn and stream it through ``show``, with typing kept alive throughout.

    ``reply`` is the ticket's future: it resolves when the room's turn starts. While it waits,
    a "you're #N in line" notice (when N > 1) is shown, and later edited into the reply. A
    failure shows one short error line under whatever text was already written; a platform
    error while showing (``transport_errors``) is only logged, since showing is what failed.
    """
    finished = asyncio.Event()
    typing = asyncio.create_task(keep_typing(send_typing, finished, typing_every), name=f"hearth-typing-{label}")
    stream: ReplyStream | None = None
    try:
        if position > 1:
            await show(queue_notice(position))
            throttle.mark()  # the notice is the send; the reply's text comes as edits of it
        stream = await reply
        final = await stream_edits(stream, show, throttle)
        if not final:
            await show(EMPTY_REPLY)
    except HearthError as exc:
        log.warning("reply in %s failed: %s", label, exc, exc_info=getattr(exc, "original", None) or exc)
        await _show_error(show, stream, exc)
    except transport_errors as exc:
        log.warning("could not show a reply in %s: %s", label, exc)
    except Exception as exc:
        log.exception("reply in %s crashed", label)
        await _show_error(show, stream, exc)
    finally:
        finished.set()
        await typing


async def _show_error(show: Callable[[str], Awaitable[None]], stream: ReplyStream | None, exc: BaseException) -> None:
    partial = defuse_mentions(stream.partial_text().strip()) if stream is not None else ""
    text = f"{partial}\n\n{error_line(exc)}" if partial else error_line(exc)
    try:
        await show(text)
    except Exception as show_error:  # the platform is failing; the log is all that is left
        log.warning("could not show the error line either: %s", show_error)
