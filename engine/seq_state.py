"""Copy one sequence's KV cells out of and into a llama context without extra copies, and cut a stretch out.

A room's state is tens of MB (about 23 MB per 1,000 SmolLM2 tokens), and a warm turn's
whole budget is a few hundred ms. Measured on 2 cores for a 27 MB state: a fresh buffer
cost 10 ms (zero-filling and faulting in its pages), the copy itself 5 ms. So a room's
state is written into the buffer of its previous state when that has room, and buffers
are made with headroom for the turns to come.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp

from engine.state_cache import SeqState


def read_sequence_state(ctx: Any, reuse: SeqState | None = None, seq_id: int = 0) -> memoryview:
    """A sequence's serialized KV cells, written by llama.cpp straight into a Python buffer.

    ``reuse`` is a state this one replaces (the same room's last one); its buffer is
    written over when it is big enough.
    """
    size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
    buffer = reuse.obj if isinstance(reuse, memoryview) and isinstance(reuse.obj, bytearray) else None
    if buffer is None or len(buffer) < size:
        buffer = bytearray(size + size // 8)  # room for a few more turns
    view = memoryview(buffer)[:size]
    written = llama_cpp.llama_state_seq_get_data(ctx, (ctypes.c_uint8 * size).from_buffer(view), size, seq_id)
    return view[:written]


def write_sequence_state(ctx: Any, data: SeqState, seq_id: int = 0) -> bool:
    """Load ``data`` into sequence ``seq_id`` (replacing its cells); False if llama.cpp refuses it."""
    source: Any
    if isinstance(data, bytes):  # points into the bytes object itself
        source = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))
    else:
        source = (ctypes.c_uint8 * len(data)).from_buffer(data)
    return bool(llama_cpp.llama_state_seq_set_data(ctx, source, len(data), seq_id))


def cut_cells(memory: Any, start: int, end: int, seq_id: int = 0) -> bool:
    """Remove a sequence's cells at positions ``[start, end)`` and move the later ones back to
    close the gap (llama.cpp re-rotates their keys at the next decode). False, with nothing
    changed, where the memory cannot shift positions (recurrent or some hybrid models)."""
    if not llama_cpp.llama_memory_can_shift(memory):
        return False
    if not llama_cpp.llama_memory_seq_rm(memory, seq_id, start, end):
        return False
    llama_cpp.llama_memory_seq_add(memory, seq_id, end, -1, start - end)
    return True
