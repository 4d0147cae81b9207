"""Copy sequence 0's KV cells out of and into a llama context, without extra copies.

A room's state is tens of MB (about 23 MB per 1,000 SmolLM2 tokens); each avoidable copy
of it cost about 15 ms, measured, and a warm turn's whole budget is a few hundred ms.
Worker thread only.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp


def read_sequence_state(ctx: Any) -> bytearray:
    """Sequence 0's serialized KV cells, written by llama.cpp straight into a Python buffer."""
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    data = bytearray(size)
    written = llama_cpp.llama_state_seq_get_data(ctx, (ctypes.c_uint8 * size).from_buffer(data), size, 0)
    return data if written == size else data[:written]


def write_sequence_state(ctx: Any, data: bytes | bytearray) -> bool:
    """Load ``data`` into sequence 0 (replacing its cells); False if llama.cpp refuses it."""
    if isinstance(data, bytearray):
        source = (ctypes.c_uint8 * len(data)).from_buffer(data)
    else:  # points into the bytes object itself
        source = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))
    return bool(llama_cpp.llama_state_seq_set_data(ctx, source, len(data), 0))
