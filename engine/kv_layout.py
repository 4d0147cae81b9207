"""Convert a serialized llama.cpp sequence state from the flash-attention KV layout to the plain one
(and from one KV stream to the stream count of a batched context).

On a CPU, llama.cpp's flash-attention kernel evaluates a long prompt faster, but a short
warm batch against a long cache slower, than the plain path (measured in README
"Performance"). The plain path stores V transposed, flash attention does not, and
llama.cpp refuses to load a state of the other layout. Rewriting the V rows of the state
is what lets a cold prompt be evaluated with flash attention and then served plainly.

The format, as written by ``llama_kv_cache::state_write`` (llama.cpp in llama-cpp-python
0.3.36): a header, ``u32 0xaf143cd8, i32 seq_id``, then once per KV cache (two for
sliding-window models)::

    u32 n_stream
    per stream: u32 cell_count, and if it is not 0:
        per cell: i32 pos, u32 n_seq_id, i32 seq_id * n_seq_id
        u32 v_trans, u32 n_layer
        per layer: i32 k_type, u64 k_row_size, k_row_size * cell_count bytes
        v_trans 0, per layer: i32 v_type, u64 v_row_size, v_row_size * cell_count bytes
        v_trans 1, per layer: i32 v_type, u32 v_elem_size, u32 n_embd_v,
                              n_embd_v rows of cell_count * v_elem_size bytes

Anything that does not parse exactly (a newer format, cells with extra fields, a
quantized V) gives ``None``, and the caller evaluates the prompt the plain way instead.
"""

from __future__ import annotations

import struct

import numpy as np

_U32 = struct.Struct("<I")
_I32_U64 = struct.Struct("<iQ")
_V_TRANS_HEADER = struct.Struct("<iII")
_MAX_LAYERS = 4096
_HEADER = struct.Struct("<Ii")
_IO_MAGIC = 0xAF143CD8


class _Malformed(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.at = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.at + n > len(self.data):
            raise _Malformed("state ends early")
        piece = self.data[self.at : self.at + n]
        self.at += n
        return piece

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    @property
    def done(self) -> bool:
        return self.at == len(self.data)


def transpose_values(state: bytes | memoryview, streams: int = 1) -> bytes | None:
    """The same sequence state with V in the plain (transposed) layout, or None if it can't be.

    ``streams``: the KV stream count of the context it is for (``model.parallel`` with split
    KV). A single-stream state is written as one whose first stream holds the cells and the
    others none: llama.cpp loads the cells into the stream of the sequence it is given.
    """
    try:
        reader = _Reader(state)
        header = reader.take(_HEADER.size)
        if _HEADER.unpack(header)[0] != _IO_MAGIC:
            raise _Malformed("not a sequence state")
        out: list[bytes | memoryview] = [header]
        while not reader.done:
            _convert_cache(reader, out, streams)
        return b"".join(out)
    except _Malformed:
        return None


def _convert_cache(reader: _Reader, out: list[bytes | memoryview], streams: int) -> None:
    n_stream = reader.u32()
    if n_stream != streams and n_stream != 1:
        raise _Malformed(f"{n_stream} KV streams can't become {streams}")
    out.append(_U32.pack(streams))
    for _ in range(n_stream):
        cell_count = reader.u32()
        out.append(_U32.pack(cell_count))
        if cell_count:
            _convert_stream(reader, cell_count, out)
    out.extend(_U32.pack(0) for _ in range(streams - n_stream))  # the other streams: no cells


def _convert_stream(reader: _Reader, cells: int, out: list[bytes | memoryview]) -> None:
    meta_start = reader.at
    for _ in range(cells):
        reader.take(4)  # pos
        n_seq_id = reader.u32()
        if n_seq_id > 64:
            raise _Malformed("implausible cell")
        reader.take(4 * n_seq_id)
    out.append(reader.data[meta_start : reader.at])

    v_trans, n_layer = reader.u32(), reader.u32()
    if v_trans != 0 or not 0 < n_layer <= _MAX_LAYERS:
        raise _Malformed("not a flash-attention layout")
    out.append(_U32.pack(1) + _U32.pack(n_layer))
    for _ in range(n_layer):
        header = reader.take(_I32_U64.size)
        _, row = _I32_U64.unpack(header)
        out.append(header)
        out.append(reader.take(row * cells))
    for _ in range(n_layer):  # (a model with V-less layers would not parse, and falls back)
        v_type, row = _I32_U64.unpack(reader.take(_I32_U64.size))
        element = _element_size(v_type)
        if row % element:
            raise _Malformed("V row is not whole elements")
        n_embd = row // element
        rows = np.frombuffer(reader.take(row * cells), dtype=np.dtype(f"V{element}")).reshape(cells, n_embd)
        out.append(_V_TRANS_HEADER.pack(v_type, element, n_embd))
        out.append(np.ascontiguousarray(rows.T).tobytes())


# ggml types whose elements stand alone: f32, f16, bf16. Quantized V needs flash attention anyway.
_ELEMENT_SIZES = {0: 4, 1: 2, 30: 2}


def _element_size(v_type: int) -> int:
    size = _ELEMENT_SIZES.get(v_type)
    if size is None:
        raise _Malformed(f"V type {v_type} has no plain layout")
    return size
