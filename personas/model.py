"""The persona: who the bot is in a room, and how that becomes system text.

A persona is plain data (pydantic, ``extra="forbid"`` so typos in a YAML file fail
loudly). Macros are checked when the persona is built, so a bad file fails at load
time and rendering never surprises a chat.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from personas.macros import macro_checked, macro_problem, render_macros
from sampling_limits import sampling_field

DEFAULT_SYSTEM_PROMPT = (
    "Write {{char}}'s next reply in a chat with {{user}}. Stay in character as {{char}}. "
    "Keep replies short and never write {{user}}'s lines."
)
"""Used when a persona sets no system prompt; ``{{original}}`` expands to it."""

_TEXT_FIELDS = (
    "description",
    "personality",
    "scenario",
    "greeting",
    "system_prompt",
    "post_history_instructions",
    "creator_notes",
)
_TEXT_LIST_FIELDS = ("alternate_greetings", "group_only_greetings", "example_dialogues")
DEFAULT_TALKATIVENESS = 0.5  # SillyTavern's default: a character answers about every other message


class SamplingOverride(BaseModel):
    """Per-persona sampling tweaks; unset fields fall through to the model's defaults."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = sampling_field("temperature", None)
    top_p: float | None = sampling_field("top_p", None)
    top_k: int | None = sampling_field("top_k", None)
    min_p: float | None = sampling_field("min_p", None)
    repeat_penalty: float | None = sampling_field("repeat_penalty", None)
    max_tokens: int | None = sampling_field("max_tokens", None)
    stop: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Only the fields the persona actually set, ready to merge over model defaults."""
        return self.model_dump(exclude_none=True)


class CardAsset(BaseModel):
    """One V3 card asset (icon, background, emotion...): kept so an export gives it back.

    ``uri`` is ``ccdefault:`` (the card's own image), ``embeded://path`` (a file in a CHARX,
    the spec's spelling), or a URL; hearth never fetches it.
    """

    model_config = ConfigDict(extra="allow")

    type: str
    uri: str
    name: str = ""
    ext: str = ""


def _normalize_newlines(value: Any) -> Any:
    """Cards from Windows tools carry CRLF; one newline style keeps prompts and round trips stable."""
    if isinstance(value, str):
        return value.replace("\r\n", "\n").replace("\r", "\n")
    if isinstance(value, list):
        return [_normalize_newlines(item) for item in value]
    return value


class Persona(BaseModel):
    """A character: identity, prompt text, greeting, examples, sampling and attached lore."""

    model_config = ConfigDict(extra="forbid")

    name: str
    nickname: str = ""  # V3: what {{char}} says in prompts, while ``name`` stays the display name
    description: str = ""
    personality: str = ""
    scenario: str = ""
    greeting: str = ""
    alternate_greetings: list[str] = Field(default_factory=list)
    group_only_greetings: list[str] = Field(default_factory=list)  # V3: said when joining a cast
    # How readily the character speaks up in a group (0 to 1); None: the card's
    # extensions.talkativeness, else DEFAULT_TALKATIVENESS.
    talkativeness: float | None = Field(default=None, ge=0.0, le=1.0)
    example_dialogues: list[str] = Field(default_factory=list)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    post_history_instructions: str = ""
    sampling: SamplingOverride = Field(default_factory=SamplingOverride)
    model: str | None = None  # preferred model (a registry name or path); loaded when RAM allows
    wake_words: list[str] | None = None
    avatar: str | None = None
    lorebooks: list[str] = Field(default_factory=list)
    creator_notes: str = ""
    creator: str = ""
    character_version: str = ""
    tags: list[str] = Field(default_factory=list)
    extensions: dict[str, Any] = Field(default_factory=dict)
    # V3 card metadata, carried through import and export untouched.
    assets: list[CardAsset] = Field(default_factory=list)
    card_source: list[str] = Field(default_factory=list)  # the card's ``source`` (where it was published)
    creation_date: int | None = None  # unix seconds
    modification_date: int | None = None
    source: str | None = Field(default=None, exclude=True)  # the file this persona was read from

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("name must not be empty")
        if "\n" in value:
            raise ValueError("name must be one line")
        return value

    @field_validator("nickname")
    @classmethod
    def _nickname(cls, value: str) -> str:
        value = value.strip()
        if "\n" in value:
            raise ValueError("nickname must be one line")
        return value

    @field_validator(*_TEXT_FIELDS, *_TEXT_LIST_FIELDS, mode="before")
    @classmethod
    def _newlines(cls, value: Any) -> Any:
        return _normalize_newlines(value)

    @field_validator(*_TEXT_FIELDS)
    @classmethod
    def _macros(cls, value: str) -> str:
        return macro_checked(value)

    @field_validator(*_TEXT_LIST_FIELDS)
    @classmethod
    def _macros_in_list(cls, value: list[str]) -> list[str]:
        for index, item in enumerate(value):
            problem = macro_problem(item)
            if problem:
                raise ValueError(f"item {index}: {problem}")
        return value

    @field_validator("tags", "lorebooks")
    @classmethod
    def _drop_blank_words(cls, value: list[str]) -> list[str]:
        return [word.strip() for word in value if word.strip()]

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        """A blank preference is no preference."""
        value = (value or "").strip()
        if "\n" in value:
            raise ValueError("model must be one line")
        return value or None

    @field_validator("wake_words")
    @classmethod
    def _wake_words(cls, value: list[str] | None) -> list[str] | None:
        """An empty list means "use the name", exactly like None, so store it as None."""
        words = [word.strip() for word in value or [] if word.strip()]
        return words or None

    def __eq__(self, other: object) -> bool:
        """Equal when the content is; ``source`` only says where a persona was read from."""
        if not isinstance(other, Persona):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # mutable model

    @property
    def char_name(self) -> str:
        """What ``{{char}}`` becomes: the V3 nickname when the card has one, else the name."""
        return self.nickname or self.name

    @property
    def effective_talkativeness(self) -> float:
        """The persona's own value, else the card's (SillyTavern writes it as a string), else 0.5."""
        if self.talkativeness is not None:
            return self.talkativeness
        try:
            value = float(self.extensions.get("talkativeness", DEFAULT_TALKATIVENESS))
        except (TypeError, ValueError):
            return DEFAULT_TALKATIVENESS
        return min(max(value, 0.0), 1.0) if value == value else DEFAULT_TALKATIVENESS  # NaN: the default

    @property
    def effective_wake_words(self) -> list[str]:
        """Words that summon the persona; its name when none are configured."""
        return list(self.wake_words) if self.wake_words else [self.name]

    def render(self, text: str, user: str) -> str:
        """Expand macros in any text meant for this persona (lore entries too)."""
        return render_macros(
            text.replace("\r\n", "\n"), char=self.char_name, user=user, original=DEFAULT_SYSTEM_PROMPT
        ).strip()

    def render_system(self, user: str, lore_before: str = "", lore_after: str = "") -> str:
        """The whole system text; empty parts are skipped so small contexts waste nothing."""
        parts = [
            self.system_prompt,
            lore_before,
            self.description,
            f"{{{{char}}}}'s personality: {self.personality.strip()}" if self.personality.strip() else "",
            f"Scenario: {self.scenario.strip()}" if self.scenario.strip() else "",
            lore_after,
            self._examples_block(),
        ]
        rendered = (self.render(part, user) for part in parts if part.strip())
        return "\n\n".join(part for part in rendered if part)

    def render_greeting(self, user: str) -> str:
        """The first message, shown when a room starts talking to this persona."""
        return self.render(self.greeting, user)

    def render_post_history(self, user: str) -> str:
        """Instructions placed after the chat history (the most volatile, strongest position)."""
        return self.render(self.post_history_instructions, user)

    def _examples_block(self) -> str:
        """Label example dialogues so a small model imitates their style, not their events."""
        examples = [text.strip() for text in self.example_dialogues if text.strip()]
        if not examples:
            return ""
        body = "\n\n".join(f"Example {index}:\n{text}" for index, text in enumerate(examples, 1))
        return f"Examples of how {{{{char}}}} talks (style only, not part of this chat):\n\n{body}"
