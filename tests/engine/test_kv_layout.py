"""The flash-attention → plain KV state rewrite, on hand-built states (pure byte layout)."""

from __future__ import annotations

import struct

import numpy as np

from engine.kv_layout import transpose_values

F16, F32, Q8_0 = 1, 0, 8


def meta(cells: int, seq_id: int = 0) -> bytes:
    return b"".join(struct.pack("<iIi", pos, 1, seq_id) for pos in range(cells))


def flash_state(k: list[np.ndarray], v: list[np.ndarray], v_type: int = F16, caches: int = 1) -> bytes:
    """A state as llama.cpp writes it with flash attention: K and V both one row per cell."""
    cells = k[0].shape[0]
    body = struct.pack("<II", 1, cells) + meta(cells) + struct.pack("<II", 0, len(k))
    for layer in k:
        body += struct.pack("<iQ", F16, layer.nbytes // cells) + layer.tobytes()
    for layer in v:
        body += struct.pack("<iQ", v_type, layer.nbytes // cells) + layer.tobytes()
    return struct.pack("<Ii", 0xAF143CD8, 0) + body * caches


def layers(cells: int, embd: int, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((cells, embd)).astype(np.float16) for _ in range(count)]


def test_values_become_one_row_per_embedding_dimension():
    cells, embd = 5, 3
    k, v = layers(cells, embd, 2, 1), layers(cells, embd, 2, 2)
    out = transpose_values(flash_state(k, v))
    assert out is not None

    header_and_meta = 8 + 8 + 12 * cells
    assert out[:header_and_meta] == flash_state(k, v)[:header_and_meta]
    at = header_and_meta
    assert struct.unpack_from("<II", out, at) == (1, 2), "v_trans is set, the layer count kept"
    at += 8
    for layer in k:  # K is untouched
        assert struct.unpack_from("<iQ", out, at) == (F16, embd * 2)
        at += 12
        assert out[at : at + layer.nbytes] == layer.tobytes()
        at += layer.nbytes
    for layer in v:
        assert struct.unpack_from("<iII", out, at) == (F16, 2, embd)
        at += 12
        rows = np.frombuffer(out[at : at + layer.nbytes], dtype=np.float16).reshape(embd, cells)
        np.testing.assert_array_equal(rows, layer.T)
        at += layer.nbytes
    assert at == len(out)


def test_each_cache_of_a_sliding_window_model_is_rewritten():
    k, v = layers(4, 2, 1, 3), layers(4, 2, 1, 4)
    single, double = transpose_values(flash_state(k, v)), transpose_values(flash_state(k, v, caches=2))
    assert single is not None and double is not None
    assert double == single + single[8:]


def test_layouts_it_cannot_rewrite_give_none():
    k, v = layers(4, 2, 1, 5), layers(4, 2, 1, 6)
    good = flash_state(k, v)
    assert transpose_values(good[:-1]) is None, "truncated"
    assert transpose_values(good + b"\0") is None, "trailing bytes"
    assert transpose_values(b"\0\0\0\0" + good[4:]) is None, "wrong magic"
    assert transpose_values(flash_state(k, v, v_type=Q8_0)) is None, "quantized V has no plain layout"
    plain = transpose_values(good)
    assert plain is not None and transpose_values(plain) is None, "already plain"


def test_f32_values_keep_their_element_size():
    k = layers(3, 2, 1, 7)
    v = [np.arange(6, dtype=np.float32).reshape(3, 2)]
    out = transpose_values(flash_state(k, v, v_type=F32))
    assert out is not None
    tail = np.frombuffer(out[-v[0].nbytes :], dtype=np.float32)
    np.testing.assert_array_equal(tail, [0, 2, 4, 1, 3, 5])


def test_a_single_stream_state_is_written_for_a_context_of_several_streams():
    """The batched context (split KV, ``model.parallel`` streams) loads it into the stream of
    the sequence it is given: the first stream holds the cells, the others are empty."""
    k, v = layers(4, 2, 1, 8), layers(4, 2, 1, 9)
    one = transpose_values(flash_state(k, v))
    three = transpose_values(flash_state(k, v), streams=3)
    assert one is not None and three is not None
    assert struct.unpack_from("<I", three, 8) == (3,)
    assert three[12:] == one[12:] + struct.pack("<II", 0, 0)
    assert transpose_values(flash_state(k, v, caches=2), streams=3) == three + three[8:]
