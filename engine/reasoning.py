"""Split ``<think>…</think>`` reasoning out of a token stream.

Reasoning models emit their chain of thought inside think tags. Users should never
see it, and a tag can be cut across two streamed chunks, so the filter holds back
any tail that could be the start of a tag until the next chunk decides it.
"""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class ThinkFilter:
    """Feed raw chunks; get back (visible, reasoning) pieces."""

    def __init__(self) -> None:
        self._buffer = ""
        self._thinking = False

    def feed(self, chunk: str) -> tuple[str, str]:
        self._buffer += chunk
        visible: list[str] = []
        reasoning: list[str] = []
        while self._buffer:
            tag = CLOSE_TAG if self._thinking else OPEN_TAG
            index = self._buffer.find(tag)
            if index >= 0:
                (reasoning if self._thinking else visible).append(self._buffer[:index])
                self._buffer = self._buffer[index + len(tag) :]
                self._thinking = not self._thinking
                continue
            keep = partial_tag_suffix(self._buffer, tag)
            emit = self._buffer[: len(self._buffer) - keep]
            (reasoning if self._thinking else visible).append(emit)
            self._buffer = self._buffer[len(emit) :]
            break
        return "".join(visible), "".join(reasoning)

    def flush(self) -> tuple[str, str]:
        """End of stream: an unclosed think block stays hidden; a held-back partial tag is text."""
        rest, self._buffer = self._buffer, ""
        return ("", rest) if self._thinking else (rest, "")


def partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def strip_reasoning(text: str) -> str:
    """Remove think blocks from a finished text."""
    think = ThinkFilter()
    visible, _ = think.feed(text)
    tail, _ = think.flush()
    return (visible + tail).strip()
