"""Route llama.cpp's own log lines into Python logging, at their real levels.

llama-cpp-python 0.3.36 maps ggml's log levels with an outdated enum (ggml now counts
DEBUG=1, INFO=2, WARN=3, ERROR=4), so every llama.cpp warning reached stderr as raw text
even with ``verbose=False``, e.g. a line on every cancelled prompt. Here they go to the
``llama.cpp`` logger instead, where hearth's logging settings decide what is shown.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import llama_cpp

log = logging.getLogger("llama.cpp")

_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}  # INFO is load chatter
_CONTINUE = 5
# Routine lines, shown only with --debug: a full-size sliding-window cache is what hearth
# asks for (prefix reuse needs it), and the rest is what llama.cpp says when hearth's abort
# callback cancels a prompt evaluation on purpose (ggml status 1 and decode's 2: aborted).
_ROUTINE = (
    "using full-size SWA cache",
    "removing memory module entries",
    "graph_compute_async failed with error 1",
    "failed to compute graph, compute status: 1",
    "failed to decode, ret = 2",
)

_last_level = logging.DEBUG
_callback: Any = None  # kept alive: llama.cpp holds only the C pointer


def _forward(level: int, text: bytes, _user_data: Any) -> None:
    global _last_level
    _last_level = _last_level if level == _CONTINUE else _LEVELS.get(level, logging.DEBUG)
    line = text.decode("utf-8", errors="replace").strip()
    if not line:
        return
    log.log(logging.DEBUG if any(marker in line for marker in _ROUTINE) else _last_level, "%s", line)


def route_llama_logs() -> None:
    """Install the forwarding callback (idempotent)."""
    global _callback
    if _callback is None:
        _callback = llama_cpp.llama_log_callback(_forward)
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
