"""Fit persona, lore, summary and recent turns into the model's context window.

Order is fixed so the prompt prefix stays stable from turn to turn (prompt evaluation
dominates latency on a CPU): the system text (persona and constant lore) and the
rolling summary first, then as many recent turns as fit, newest kept first, and the
volatile text (keyword-activated lore, post-history instructions) last, just before
the newest turn. Tokens are counted with the model's own tokenizer over the prompt
exactly as its chat template renders it: never estimated from characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.chat_template import ChatMessage
from engine.volatile_span import span_between
from errors import ModelError

# A message too long for the window keeps its beginning and its end (where a question usually is);
# this marks the middle that was left out. The store always keeps the message whole.
TRUNCATION_NOTE = "\n… [the middle of this long message was left out to fit the context window] …\n"
# No token of a model's vocabulary is anywhere near this many characters long on average, so text
# beyond ``MAX_CHARS_PER_TOKEN * n_ctx`` characters can never fit the window: it is cut before
# tokenizing (a 200 KB message would otherwise stall the event loop for seconds).
MAX_CHARS_PER_TOKEN = 8
SUMMARY_HEADER = "Summary of the earlier conversation:"
# Chat-template control markup: ChatML and Llama 3 (``<|…|>``), Gemma, Llama 2, BOS/EOS. The rendered
# prompt is tokenized with special tokens on (the template needs them), so the same strings typed
# by a user would become real control tokens and forge a system turn. A word joiner after the first
# character keeps the text readable and makes it plain text to the tokenizer.
_CONTROL_MARKUP = re.compile(r"<\|[^\s<>|]{1,48}\|>|</?s>|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>")
WORD_JOINER = "\u2060"


class PromptTokenizer(Protocol):
    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Turn:
    """A stored message as the prompt needs it."""

    role: str  # "user" | "assistant"
    speaker: str
    text: str


@dataclass(frozen=True)
class AssembledPrompt:
    messages: tuple[ChatMessage, ...]
    tokens: list[int]
    budget: int
    turns_included: int
    turns_available: int
    truncated_newest: bool
    dropped: tuple[str, ...] = ()  # optional parts left out to fit ("lore", "summary", "system")
    volatile_span: tuple[int, int] | None = None  # [start, end) of the volatile block in ``tokens``

    @property
    def token_count(self) -> int:
        return len(self.tokens)


PLACEHOLDER_USER = "User"  # SillyTavern's default user name


def head_and_tail(text: str, keep: int) -> str:
    """``text`` with only its first and last ``keep // 2`` characters, the cut marked, when longer."""
    if len(text) <= keep:
        return text
    head = (keep + 1) // 2
    tail = keep - head
    return text[:head] + TRUNCATION_NOTE + (text[len(text) - tail :] if tail else "")


def capped(text: str, n_ctx: int) -> str:
    """``text`` cut to what could ever fit an ``n_ctx`` window, marked when cut. The store keeps it whole."""
    return head_and_tail(text, n_ctx * MAX_CHARS_PER_TOKEN)


def message_token_limit(n_ctx: int, reserve: int) -> int:
    """Tokens one message may take in a prompt: half of what the window leaves after the reply.

    A longer message would push every other turn (and the room's context) out of view, and its
    prompt would take the longest to evaluate.
    """
    return max((n_ctx - reserve) // 2, 16)


def fits_uncounted(text: str, limit: int) -> bool:
    """True when ``text`` surely takes at most ``limit`` tokens without counting them: a token
    is at least a byte. Cheap, so it may run on the event loop."""
    return len(text.encode("utf-8")) <= limit


def within_limit(text: str, limit: int, count_tokens: Callable[[str], int]) -> bool:
    """True when ``text`` takes at most ``limit`` tokens; counts only text that ``fits_uncounted``
    cannot decide (blocking then)."""
    return fits_uncounted(text, limit) or count_tokens(text) <= limit


def fit_message(text: str, limit: int, count_tokens: Callable[[str], int]) -> str:
    """``text``, or its beginning and end in at most ``limit`` tokens, with the middle marked as left out.

    Call it on ``capped`` text: it tokenizes a bounded amount, several times. Never on the event loop.
    """
    if within_limit(text, limit, count_tokens):
        return text
    low, high = 0, len(text) - 1  # `low` characters always fit (the note alone is far below any limit)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(head_and_tail(text, middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    return head_and_tail(text, low) if low < len(text) else text


def defuse_markup(text: str) -> str:
    """``text`` with chat-control markup made plain, for anything users (or the model) wrote."""
    return _CONTROL_MARKUP.sub(lambda match: match.group(0)[0] + WORD_JOINER + match.group(0)[1:], text)


def prompt_user(turns: Sequence[Turn]) -> str:
    """Who ``{{user}}`` is in the persona, lore and greeting: the cached front of the prompt.

    With one person talking it is their name. With several, it is ``User``: naming the last
    speaker there would change the prompt's front at every change of speaker, and each
    change would re-evaluate the whole prompt (seconds on a CPU, against a fraction of a
    second warm). Each user line still carries its speaker's name.
    """
    names = {turn.speaker for turn in turns if turn.role == "user"}
    return names.pop() if len(names) == 1 else PLACEHOLDER_USER


def group_turns(turns: Sequence[Turn]) -> list[ChatMessage]:
    """Consecutive user turns become one user message, each line keeping its speaker's name."""
    messages: list[ChatMessage] = []
    for turn in turns:
        if turn.role == "assistant":
            messages.append(ChatMessage("assistant", defuse_markup(turn.text)))
            continue
        line = defuse_markup(f"{turn.speaker}: {turn.text}")
        if messages and messages[-1].role == "user":
            messages[-1] = ChatMessage("user", messages[-1].content + "\n" + line)
        else:
            messages.append(ChatMessage("user", line))
    return messages


@dataclass
class _Parts:
    system: str
    summary: str
    volatile: str
    turns: list[Turn]

    def messages(self, count: int) -> list[ChatMessage]:
        system = self.system
        if self.summary:  # written by the model from users' text
            summary = defuse_markup(self.summary)
            system = f"{system}\n\n{SUMMARY_HEADER}\n{summary}" if system else summary
        head = [ChatMessage("system", system)] if system else []
        body = group_turns(self.turns[len(self.turns) - count :]) if count else []
        if self.volatile:
            at = len(body) - 1 if body and body[-1].role == "user" else len(body)
            body.insert(at, ChatMessage("system", self.volatile))
        return head + body


def assemble(
    model: PromptTokenizer,
    *,
    system: str,
    turns: Sequence[Turn],
    n_ctx: int,
    reserve: int,
    summary: str = "",
    volatile: str = "",
) -> AssembledPrompt:
    """Build the largest prompt that leaves ``reserve`` tokens for the reply."""
    budget = n_ctx - reserve
    if budget <= 0:
        raise ModelError(f"n_ctx {n_ctx} leaves no room for a prompt after reserving {reserve} for the reply")
    parts = _Parts(system, summary, volatile, list(turns))

    def tokens_for(count: int) -> list[int]:
        return model.tokenize(model.render(parts.messages(count)))

    dropped: list[str] = []
    truncated = False
    newest_needed = 1 if parts.turns else 0
    tokens = tokens_for(newest_needed)
    # Optional parts go first when even the newest turn alone does not fit.
    for name in ("volatile", "summary"):
        if len(tokens) > budget and getattr(parts, name):
            setattr(parts, name, "")
            dropped.append("lore" if name == "volatile" else name)
            tokens = tokens_for(newest_needed)
    if len(tokens) > budget and parts.turns:
        truncated = _truncate_newest(parts, tokens_for, budget)
        tokens = tokens_for(1)
    if len(tokens) > budget:
        _shrink_text(parts, "system", tokens_for, newest_needed, budget)
        dropped.append("system")
        tokens = tokens_for(newest_needed)
    if len(tokens) > budget:
        raise ModelError(f"n_ctx {n_ctx} is too small for even an empty prompt")

    low, high = newest_needed, len(parts.turns)  # low always fits
    best = tokens  # always the tokens for `low` turns
    while low < high:
        middle = (low + high + 1) // 2
        candidate = tokens_for(middle)
        if len(candidate) <= budget:
            low, best = middle, candidate
        else:
            high = middle - 1
    return AssembledPrompt(
        messages=tuple(parts.messages(low)),
        tokens=best,
        budget=budget,
        turns_included=low,
        turns_available=len(parts.turns),
        truncated_newest=truncated,
        dropped=tuple(dropped),
        volatile_span=_volatile_span(parts, tokens_for, low, best),
    )


def _volatile_span(parts: _Parts, tokens_for, count: int, tokens: list[int]) -> tuple[int, int] | None:
    """Where the volatile block's tokens are in ``tokens``: the one stretch the same prompt
    without it lacks (one more tokenization). None when there is none, or no clean one."""
    if not parts.volatile:
        return None
    volatile, parts.volatile = parts.volatile, ""
    try:
        return span_between(tokens, tokens_for(count))
    finally:
        parts.volatile = volatile


def _truncate_newest(parts: _Parts, tokens_for, budget: int) -> bool:
    """Cut the newest turn's text to its longest beginning and end that fit, and say so in the text."""
    newest = parts.turns[-1]
    low, high = 0, len(newest.text) - 1  # the whole text does not fit: that is why we are here
    while low < high:
        middle = (low + high + 1) // 2
        parts.turns[-1] = Turn(newest.role, newest.speaker, head_and_tail(newest.text, middle))
        if len(tokens_for(1)) <= budget:
            low = middle
        else:
            high = middle - 1
    parts.turns[-1] = Turn(newest.role, newest.speaker, head_and_tail(newest.text, low))
    return True


def _shrink_text(parts: _Parts, name: str, tokens_for, count: int, budget: int) -> None:
    text = getattr(parts, name)
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        setattr(parts, name, text[:middle])
        if len(tokens_for(count)) <= budget:
            low = middle
        else:
            high = middle - 1
    setattr(parts, name, text[:low])
