"""Read a GGUF file's metadata without loading its weights.

``gguf.GGUFReader`` parses every vocab entry into numpy objects and takes seconds on a
100 MB file; listing models must be instant, so this reads the header directly and
skips arrays. It also proves the file is whole: every tensor must lie inside it, so a
truncated download is caught before llama.cpp ever sees it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from errors import ModelError

GGUF_MAGIC = b"GGUF"
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_MAX_STRING = 64 * 1024 * 1024
_KEEP_ARRAYS = {"general.languages", "general.tags"}


@dataclass(frozen=True)
class GGUFInfo:
    """What a model file says about itself."""

    path: Path
    file_size: int
    version: int
    architecture: str
    name: str | None
    parameter_count: int
    file_type: str
    context_length: int | None
    chat_template: str | None
    license: str | None
    block_count: int | None
    embedding_length: int | None
    head_count_kv: int | None
    head_count: int | None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """f16 K and V for every layer at ``n_ctx``: the RAM a context costs beyond the weights."""
        if not (self.block_count and self.embedding_length and self.head_count):
            return 0
        kv_heads = self.head_count_kv or self.head_count
        head_dim = self.embedding_length // self.head_count
        return 2 * self.block_count * n_ctx * kv_heads * head_dim * 2


class _Reader:
    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle = handle
        self.path = path

    def take(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise ModelError(f"model file {self.path} is truncated (header ends early)")
        return data

    def scalar(self, type_id: int) -> Any:
        fmt, size = _SCALARS[type_id]
        return struct.unpack(fmt, self.take(size))[0]

    def string(self) -> str:
        length = self.scalar(10)
        if length > _MAX_STRING:
            raise ModelError(f"model file {self.path} is corrupt (string of {length} bytes)")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, type_id: int, keep: bool) -> Any:
        if type_id in _SCALARS:
            return self.scalar(type_id)
        if type_id == _STRING:
            return self.string()
        if type_id == _ARRAY:
            item_type, count = self.scalar(4), self.scalar(10)
            if item_type in _SCALARS and not keep:
                self.handle.seek(_SCALARS[item_type][1] * count, 1)
                return None
            items = [self.value(item_type, keep) for _ in range(count)]
            return items if keep else None
        raise ModelError(f"model file {self.path} is corrupt (unknown value type {type_id})")


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Parse the header; raise one-line ModelError for anything that is not a whole GGUF file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            return _parse(_Reader(handle, path), size)
    except ModelError:
        raise
    except (OSError, struct.error, ValueError, KeyError) as exc:
        raise ModelError(f"model file {path} is not a valid GGUF file ({exc})", original=exc) from exc


def _parse(reader: _Reader, size: int) -> GGUFInfo:
    path = reader.path
    if reader.handle.read(4) != GGUF_MAGIC:
        raise ModelError(f"model file {path} is not a GGUF file (bad magic bytes)")
    version = reader.scalar(4)
    if version not in (2, 3):
        raise ModelError(f"model file {path} has unsupported GGUF version {version}")
    tensor_count, kv_count = reader.scalar(10), reader.scalar(10)
    meta: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        meta[key] = reader.value(reader.scalar(4), keep=key in _KEEP_ARRAYS)
    params, data_end = 0, 0
    for _ in range(tensor_count):
        reader.string()
        dims = [reader.scalar(10) for _ in range(reader.scalar(4))]
        ggml_type, offset = reader.scalar(4), reader.scalar(10)
        elements = 1
        for dim in dims:
            elements *= dim
        params += elements
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        data_end = max(data_end, offset + elements // block * type_size)
    alignment = int(meta.get("general.alignment", 32))
    position = reader.handle.tell()
    data_start = position + (-position % alignment)
    if data_start + data_end > size:
        raise ModelError(
            f"model file {path} is truncated: {size} bytes, tensors need {data_start + data_end}"
        )
    arch = str(meta.get("general.architecture", "unknown"))
    return GGUFInfo(
        path=path,
        file_size=size,
        version=version,
        architecture=arch,
        name=meta.get("general.name"),
        parameter_count=params,
        file_type=_file_type_name(meta.get("general.file_type")),
        context_length=meta.get(f"{arch}.context_length"),
        chat_template=meta.get("tokenizer.chat_template"),
        license=meta.get("general.license"),
        block_count=meta.get(f"{arch}.block_count"),
        embedding_length=meta.get(f"{arch}.embedding_length"),
        head_count_kv=meta.get(f"{arch}.attention.head_count_kv"),
        head_count=meta.get(f"{arch}.attention.head_count"),
        metadata=meta,
    )


def _file_type_name(value: Any) -> str:
    if value is None:
        return "unknown"
    try:
        return LlamaFileType(int(value)).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"type {value}"
