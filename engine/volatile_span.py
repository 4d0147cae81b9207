"""Last turn's volatile block, taken out of a room's KV cells so the next turn need not redo what followed it.

A prompt's volatile block (recalled lines, keyword lore, post-history instructions, a group's
nudge) sits just before the newest user message, and it changes from turn to turn. Without
this, the next turn's prompt stops matching the evaluated cells at that block, so the user
line and the whole reply after it are evaluated again, every turn. With it, the backend
removes exactly the block's cells and shifts the cells after it back
(``llama_memory_seq_rm`` + ``llama_memory_seq_add``), and only the new block and the new
message are evaluated. The cells after the block were computed with it in view: the same
approximation as llama.cpp's context shift.

Only the span the engine declared in ``GenerationRequest.volatile_span`` is ever removed,
checked token by token against what the cells hold. A message deleted from the history
never matches a declared span, so its later cells are never kept (they were computed with
its text in view). ``forget`` drops a room's span when its memory changes (forget-me,
reset, a deleted or edited message): the cells after a block that quoted the deleted text
must not outlive it either. Pure bookkeeping: the backends do the llama calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.state_cache import common_prefix, same_room

MIN_GAIN = 8  # tokens the drop must save; below that, re-evaluating costs less than the shift


def span_between(with_block: Sequence[int], without: Sequence[int]) -> tuple[int, int] | None:
    """The one stretch ``[start, end)`` of ``with_block`` that ``without`` lacks, if there is exactly one.

    Both are the same prompt tokenized with and without its volatile block.
    """
    start = common_prefix(list(with_block), list(without))
    tail = 0
    limit = min(len(with_block), len(without)) - start
    while tail < limit and with_block[-1 - tail] == without[-1 - tail]:
        tail += 1
    end = len(with_block) - tail
    if start + tail != len(without) or end <= start:
        return None
    return start, end


@dataclass(frozen=True)
class Drop:
    """Cells to remove, ``[start, end)``, and the tokens the cells hold once they are gone."""

    start: int
    end: int
    kept: list[int]

    @property
    def size(self) -> int:
        return self.end - self.start


class VolatileSpans:
    """Per cache key: where last turn's volatile block sits in the cells, and its tokens."""

    def __init__(self) -> None:
        self._spans: dict[str, tuple[int, tuple[int, ...]]] = {}

    def record(self, room: str | None, prompt: Sequence[int], span: tuple[int, int] | None) -> None:
        """Remember this turn's block (called when its prompt is evaluated)."""
        if room is None:
            return
        if span is None or not 0 <= span[0] < span[1] <= len(prompt):
            self._spans.pop(room, None)
            return
        start, end = span
        self._spans[room] = (start, tuple(prompt[start:end]))

    def forget(self, room: str | None = None) -> None:
        """Drop a room's span and its cast members' (or every span, for ``None``)."""
        if room is None:
            self._spans.clear()
            return
        for key in [key for key in self._spans if same_room(key, room)]:
            del self._spans[key]

    def plan(self, room: str | None, held: Sequence[int], prompt: Sequence[int]) -> Drop | None:
        """The drop that lets ``prompt`` reuse more of ``held`` (the cells' tokens), or None.

        Only when the prompt leaves the cells inside last turn's recorded block, the cells still
        hold that block, and what follows it then matches at least ``MIN_GAIN`` tokens more.
        """
        if room is None or room not in self._spans:
            return None
        start, block = self._spans[room]
        end = start + len(block)
        if tuple(held[start:end]) != block:
            return None
        held_list, prompt_list = list(held), list(prompt)
        matched = common_prefix(held_list, prompt_list)
        if not start <= matched < end:
            return None
        kept = held_list[:start] + held_list[end:]
        if common_prefix(kept, prompt_list) < matched + MIN_GAIN:
            return None
        return Drop(start, end, kept)


__all__ = ["MIN_GAIN", "Drop", "VolatileSpans", "span_between"]
