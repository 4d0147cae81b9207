"""Per-room evaluated prompt states, so rooms taking turns don't evict each other.

Prompt evaluation dominates latency on a CPU. llama.cpp keeps one evaluated prefix in
its KV cache; when another room's turn runs in between, the prefix is lost and the
whole prompt is evaluated again. This cache keeps each room's sequence state (only the
used KV cells of sequence 0, which is smaller and faster than a whole-context state)
in an LRU bounded by bytes, optionally spilling to disk. Disk states carry the model
identity, so a state from another model file is ignored, and they survive restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from engine.backend import CAST_SEPARATOR

log = logging.getLogger(__name__)

_MAGIC = b"HRTHSTv1"

SeqState = bytes | bytearray | memoryview  # llama.cpp's serialized sequence data


@dataclass(frozen=True)
class RoomState:
    """The tokens a state holds, and llama.cpp's serialized sequence data for them."""

    tokens: tuple[int, ...]
    data: SeqState

    @property
    def size(self) -> int:
        """Bytes held, counting a view's whole buffer (read_sequence_state leaves headroom)."""
        held = self.data.obj if isinstance(self.data, memoryview) else self.data
        return memoryview(held).nbytes + 4 * len(self.tokens)


def common_prefix(a: tuple[int, ...] | list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def same_room(key: str, room: str) -> bool:
    """True when cache key ``key`` is ``room`` or one of its cast members (``engine.backend.cache_key``)."""
    return key == room or key.startswith(room + CAST_SEPARATOR)


class StateCache:
    """LRU of RoomState by room key, bounded by ``max_bytes``; evictions spill to ``disk_dir``."""

    def __init__(
        self, max_bytes: int, model_id: str, disk_dir: Path | None = None, max_disk_bytes: int = 2 << 30
    ) -> None:
        self.max_bytes = max_bytes
        self.max_disk_bytes = max_disk_bytes  # the least recently written files go first past this
        self.model_id = model_id
        self.disk_dir = disk_dir / _safe(model_id) if disk_dir else None
        self._ram: OrderedDict[str, RoomState] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def ram_bytes(self) -> int:
        return self._bytes

    def __contains__(self, room: str) -> bool:
        return room in self._ram or (self.disk_dir is not None and self._path(room).is_file())

    def put(self, room: str, state: RoomState) -> None:
        self.discard_ram(room)
        if state.size > self.max_bytes:
            self._spill(room, state)
            return
        self._ram[room] = state
        self._bytes += state.size
        while self._bytes > self.max_bytes and self._ram:
            old_room, old = self._ram.popitem(last=False)
            self._bytes -= old.size
            self._spill(old_room, old)

    def get(self, room: str) -> RoomState | None:
        state = self._ram.get(room)
        if state is not None:
            self._ram.move_to_end(room)
            self.hits += 1
            return state
        state = self._load(room)
        if state is None:
            self.misses += 1
            return None
        self.hits += 1
        self.put(room, state)
        return state

    def peek(self, room: str) -> RoomState | None:
        """The room's state in RAM, if any, without counting a hit or reading the disk."""
        return self._ram.get(room)

    def discard_ram(self, room: str) -> None:
        old = self._ram.pop(room, None)
        if old is not None:
            self._bytes -= old.size

    def invalidate(self, room: str | None = None) -> None:
        """Forget one room with its cast members' states (or all): after a compaction or a model swap."""
        cast = [key for key in self._ram if room is not None and key != room and same_room(key, room)]
        rooms = [room, *cast] if room is not None else list(self._ram)
        for key in rooms:
            self.discard_ram(key)
            if self.disk_dir is not None:
                self._path(key).unlink(missing_ok=True)
        if room is None and self.disk_dir is not None and self.disk_dir.is_dir():
            for path in self.disk_dir.glob("*.state"):
                path.unlink(missing_ok=True)

    def flush(self) -> None:
        """Write every RAM state to disk (at shutdown), so the next start is warm."""
        for room, state in self._ram.items():
            self._spill(room, state)

    # -- disk -----------------------------------------------------------------------------

    def _path(self, room: str) -> Path:
        assert self.disk_dir is not None
        return self.disk_dir / f"{_safe(room)}.state"

    def _spill(self, room: str, state: RoomState) -> None:
        if self.disk_dir is None:
            return
        try:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            path = self._path(room)
            tmp = path.with_suffix(".tmp")
            model = self.model_id.encode()
            with tmp.open("wb") as handle:
                handle.write(_MAGIC + struct.pack("<II", len(model), len(state.tokens)) + model)
                handle.write(struct.pack(f"<{len(state.tokens)}i", *state.tokens))
                handle.write(state.data)
            os.replace(tmp, path)
            self._trim_disk()
        except OSError as exc:
            log.warning("could not spill a room state to %s: %s", self.disk_dir, exc)

    def _trim_disk(self) -> None:
        """Delete the oldest state files until the folder fits ``max_disk_bytes``: a bot in hundreds of
        rooms must not fill the disk with states of rooms that went quiet long ago."""
        assert self.disk_dir is not None
        files = []
        for path in self.disk_dir.glob("*.state"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_disk_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def _load(self, room: str) -> RoomState | None:
        if self.disk_dir is None:
            return None
        path = self._path(room)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            if not raw.startswith(_MAGIC):
                raise ValueError("bad magic")
            model_len, n_tokens = struct.unpack_from("<II", raw, len(_MAGIC))
            offset = len(_MAGIC) + 8
            model = raw[offset : offset + model_len].decode()
            if model != self.model_id:
                return None  # a state from another model file is never restored
            offset += model_len
            tokens = struct.unpack_from(f"<{n_tokens}i", raw, offset)
            return RoomState(tuple(tokens), raw[offset + 4 * n_tokens :])
        except (ValueError, struct.error, UnicodeDecodeError):
            log.warning("ignoring a corrupt room state file %s", path)
            return None


def model_identity(path: Path) -> str:
    """Identifies a model file by name, size and a hash of its first MB: cheap, and changes with the file."""
    stat = path.stat()
    with path.open("rb") as handle:
        head = hashlib.sha256(handle.read(1 << 20)).hexdigest()[:16]
    return f"{path.name}-{stat.st_size}-{head}"


def _safe(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:24]
