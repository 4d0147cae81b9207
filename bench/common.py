"""What the benchmarks share: the model path, room prompts, and the JSON line."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path

from engine.chat_template import ChatMessage

ROOT = Path(__file__).resolve().parents[1]
SMOL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
FACTS = [
    "The river Ashwater runs north through the valley of Myr.",
    "Queen Ilsabet keeps a silver key that opens the archive under the lighthouse.",
    "The market of Dunhollow opens at dawn and closes when the bells ring twice.",
    "Old Tomas the ferryman never takes coins, only stories.",
    "Winter storms come from the western sea and last three days.",
    "The guild of cartographers argues about the true shape of the coast.",
]


def require_model(path: Path) -> Path:
    if not path.is_file():
        sys.exit(f"{path.name} is missing; run: python bot.py models pull default (or gemma-3-270m)")
    return path


def persona_messages(room: int, approx_tokens: int = 1000) -> list[ChatMessage]:
    """A distinct ~``approx_tokens`` persona prompt per room, like a character card with lore."""
    lines = [f"You are the storyteller of room {room}. Stay in character and answer briefly."]
    index = room
    while sum(len(line) for line in lines) < approx_tokens * 4.2:
        lines.append(f"Fact {index}: {FACTS[index % len(FACTS)]}")
        index += 1
    return [ChatMessage("system", "\n".join(lines))]


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4) if values else 0.0


def emit(name: str, result: dict) -> None:
    """Print the one JSON line scripts compare across versions."""
    result = {"bench": name, **result, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    print(json.dumps(result))
