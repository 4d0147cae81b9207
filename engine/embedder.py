"""Sentence embeddings for recall, from a GGUF run by llama.cpp in embedding mode.

``memory.embedding_model`` names the model: ``all-minilm-l6-v2`` (the default, fetched into
``models_dir`` by ``bot.py models pull all-minilm-l6-v2``), any embedding GGUF by path or by file
name in ``models_dir`` (the chat model's own GGUF works too, far worse: see the README), or
``off`` for full-text recall only.

A llama.cpp context is not thread-safe, so each ``Embedder`` owns one worker thread and its model
lives and dies there: nothing runs on the event loop. Recall keeps two: one answers the question
of a waiting turn, the other indexes stored messages, and ``engine.recall`` runs it between
replies, so indexing never stands between a user and a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from errors import ModelError

EMBEDDER_NAME = "all-minilm-l6-v2"  # the bundled embedder (engine.embedder_pull makes its GGUF)
EMBEDDER_FILE = "all-MiniLM-L6-v2.F16.gguf"
OFF = ("off", "none", "")
N_CTX = 512  # BERT-style embedders see at most 512 tokens; longer text is cut (truncate=True)


def resolve_embedding_model(name: str, models_dir: Path) -> Path | None:
    """The GGUF that ``memory.embedding_model`` names, or None when vectors are off.

    Raises ModelError with one line when the file is missing or is not a GGUF.
    """
    name = name.strip()
    if name.lower() in OFF:
        return None
    if name.lower() == EMBEDDER_NAME:
        path = models_dir / EMBEDDER_FILE
        if not path.is_file():
            raise ModelError(f"{path} is missing: run 'bot.py models pull {EMBEDDER_NAME}' (or 'make')")
        return path
    path = Path(name).expanduser()
    if not path.is_absolute() and not path.exists():
        path = models_dir / name
    if not path.is_file():
        raise ModelError(f"no embedding model file {name!r} (looked in {models_dir} too)")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelError(f"{path} is not a GGUF file")
    return path


class Embedder:
    """One embedding model in its own thread. ``name`` tags the vectors it makes."""

    def __init__(self, path: Path, *, background: bool = False, threads: int = 1) -> None:
        self.path = path
        self.name = path.stem
        self.threads = threads
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="hearth-embed-bg" if background else "hearth-embed",
        )
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

            try:
                self._model = Llama(
                    str(self.path),
                    embedding=True,
                    n_ctx=N_CTX,
                    n_batch=N_CTX,
                    n_ubatch=N_CTX,
                    n_threads=self.threads,
                    n_threads_batch=self.threads,  # embedding is all batch work: this is the count that runs
                    pooling_type=LLAMA_POOLING_TYPE_MEAN,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"cannot load the embedding model {self.path.name}: {exc}") from exc
        return self._model

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        rows = [model.embed(text or " ", normalize=False, truncate=True) for text in texts]
        vectors = np.asarray(rows, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)  # unit length: a dot product is the cosine

    async def load(self) -> None:
        """Load the model now (in its thread), so a bad file is reported at start-up."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, computed in the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._embed, list(texts))

    def _release(self) -> None:
        model, self._model = self._model, None
        if model is not None:
            model.close()

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # the pool may be shut down already
            await asyncio.get_running_loop().run_in_executor(self._pool, self._release)
        self._pool.shutdown(wait=False)


__all__ = ["EMBEDDER_FILE", "EMBEDDER_NAME", "OFF", "Embedder", "resolve_embedding_model"]
