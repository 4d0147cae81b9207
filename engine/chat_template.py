"""Render chat messages into the exact prompt text the model was trained on.

The template comes from the GGUF metadata (``tokenizer.chat_template``). Models
without one (base models such as gemma-3-270m) get a named built-in format. Rendering
here, rather than inside llama-cpp's chat handler, lets context assembly count the
real prompt tokens and lets the backend reuse the evaluated prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from errors import ModelError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Gemma has no system role: the system text opens the first user turn.
GEMMA = (
    "{{ bos_token }}{% set sys = namespace(text='') %}"
    "{% for m in messages %}{% if m.role == 'system' %}{% set sys.text = sys.text + m.content + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
    "{% if m.role == 'user' and sys.text %}{{ sys.text }}{% set sys.text = '' %}{% endif %}"
    "{{ m.content }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if sys.text %}<start_of_turn>user\n{{ sys.text }}<end_of_turn>\n{% endif %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
BUILTIN_FORMATS = {"chatml": CHATML, "gemma": GEMMA}
FORMAT_STOPS = {"chatml": ("<|im_end|>", "<|im_start|>"), "gemma": ("<end_of_turn>", "<start_of_turn>")}
# Base models with no template: which built-in format fits each architecture.
ARCH_DEFAULT_FORMAT = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}


@dataclass(frozen=True)
class ChatMessage:
    """One turn as the model sees it."""

    role: str  # "system" | "user" | "assistant"
    content: str


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    """A compiled template plus what the tokenizer needs to know about it."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", name: str = "gguf") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ModelError(f"chat template {name!r} does not compile: {exc}", original=exc) from exc
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        # If the template writes the BOS itself, the tokenizer must not add another.
        self.renders_bos = "bos_token" in source
        self.stop = FORMAT_STOPS.get(name, ()) + ((eos_token,) if eos_token else ())

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        try:
            return self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as exc:
            raise ModelError(f"chat template {self.name!r} failed to render: {exc}", original=exc) from exc


def choose_format(architecture: str, gguf_template: str | None, override: str | None) -> tuple[str, str]:
    """(name, source): an explicit override wins, then the GGUF's own template, then a built-in."""
    if override:
        if override not in BUILTIN_FORMATS:
            raise ModelError(f"unknown chat format {override!r}; built-in: {', '.join(BUILTIN_FORMATS)}")
        return override, BUILTIN_FORMATS[override]
    if gguf_template:
        return "gguf", gguf_template
    name = ARCH_DEFAULT_FORMAT.get(architecture, "chatml")
    return name, BUILTIN_FORMATS[name]
