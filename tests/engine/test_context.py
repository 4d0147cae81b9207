"""Context assembly never exceeds the window, keeps the newest message, and keeps names."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.backend import ModelSpec
from engine.context import TRUNCATION_NOTE, Turn, assemble
from engine.llama_backend import LlamaBackend
from engine.settings import ModelOptions
from tests.conftest import SMOL

_BACKEND: LlamaBackend | None = None


async def smol() -> LlamaBackend:
    """One loaded tokenizer for the whole module (hypothesis runs many examples)."""
    global _BACKEND
    if _BACKEND is None:
        backend = LlamaBackend(ModelSpec("smollm2", SMOL, ModelOptions(n_ctx=512, n_threads=1)))
        await backend.load()
        _BACKEND = backend
    return _BACKEND


@pytest.fixture(scope="module", autouse=True)
def _free_backend():
    yield
    global _BACKEND
    if _BACKEND is not None:
        _BACKEND._free()  # no generation runs now; free before interpreter shutdown
        _BACKEND = None


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=300)
turns_strategy = st.lists(
    st.tuples(st.sampled_from(["user", "assistant"]), st.sampled_from(["Ann", "Bo", "Çelik"]), words),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=turns_strategy,
    n_ctx=st.integers(min_value=256, max_value=2048),
    reserve=st.integers(min_value=1, max_value=200),
    system=words,
    summary=words,
    volatile=words,
)
async def test_prompt_never_exceeds_the_window(history, n_ctx, reserve, system, summary, volatile):
    backend = await smol()
    turns = [Turn(role, name, text) for role, name, text in history]
    turns.append(Turn("user", "Ann", "newest question?"))
    prompt = assemble(
        backend, system=system, turns=turns, n_ctx=n_ctx, reserve=reserve, summary=summary, volatile=volatile
    )
    assert len(prompt.tokens) + reserve <= n_ctx
    assert prompt.tokens == backend.tokenize(backend.render(list(prompt.messages)))
    assert prompt.turns_included >= 1
    assert "Ann: newest question?" in prompt.messages[-1].content or prompt.truncated_newest


async def test_newest_message_is_truncated_and_says_so():
    backend = await smol()
    huge = "tell me about dragons " * 2000 + "So, which one is the oldest?"
    prompt = assemble(backend, system="Be kind.", turns=[Turn("user", "Ann", huge)], n_ctx=512, reserve=64)
    assert prompt.truncated_newest
    assert TRUNCATION_NOTE in prompt.messages[-1].content, "the cut is marked"
    assert prompt.messages[-1].content.startswith("Ann: tell me about dragons")
    assert prompt.messages[-1].content.endswith("So, which one is the oldest?"), "the end (the question) is kept"
    assert len(prompt.tokens) <= 512 - 64


async def test_keeps_newest_turns_and_speaker_names():
    backend = await smol()
    turns = [Turn("user", "Ann" if i % 2 else "Bo", f"message number {i} " * 8) for i in range(60)]
    prompt = assemble(backend, system="You are Hearth.", turns=turns, n_ctx=512, reserve=64)
    assert 1 < prompt.turns_included < 60
    text = "\n".join(m.content for m in prompt.messages)
    assert "Bo: message number 58" in text and "Ann: message number 59" in text
    assert "message number 0 " not in text
    assert prompt.messages[0].role == "system"


async def test_order_is_system_summary_turns_then_volatile():
    backend = await smol()
    turns = [Turn("user", "Ann", "hi"), Turn("assistant", "Hearth", "hello"), Turn("user", "Ann", "more")]
    prompt = assemble(
        backend, system="SYSTEM", turns=turns, n_ctx=1024, reserve=64, summary="SUMMARY", volatile="LORE"
    )
    roles = [m.role for m in prompt.messages]
    assert roles == ["system", "user", "assistant", "system", "user"]
    assert prompt.messages[0].content.index("SYSTEM") < prompt.messages[0].content.index("SUMMARY")
    assert prompt.messages[3].content == "LORE"


def test_prompt_user_is_the_one_speaker_or_a_stable_placeholder():
    from engine.context import PLACEHOLDER_USER, prompt_user

    alone = [Turn("user", "Alice", "hi"), Turn("assistant", "Hearth", "hello"), Turn("user", "Alice", "again")]
    assert prompt_user(alone) == "Alice"
    group = [*alone, Turn("user", "Bob", "me too")]
    assert prompt_user(group) == PLACEHOLDER_USER
    assert prompt_user([*group, Turn("user", "Alice", "and now?")]) == prompt_user(group), "not the last speaker"
    assert prompt_user([]) == PLACEHOLDER_USER
