"""<think> blocks never reach the visible reply, even when tags are split across chunks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.reasoning import ThinkFilter, strip_reasoning


def run(chunks: list[str]) -> tuple[str, str]:
    think = ThinkFilter()
    visible, hidden = [], []
    for chunk in chunks:
        v, h = think.feed(chunk)
        visible.append(v)
        hidden.append(h)
    v, h = think.flush()
    return "".join(visible) + v, "".join(hidden) + h


def test_whole_block_removed():
    assert strip_reasoning("<think>plan it</think>Hello there") == "Hello there"


def test_tag_split_across_chunks():
    visible, hidden = run(["<th", "ink>sec", "ret</thi", "nk>Hi", "!"])
    assert visible == "Hi!"
    assert hidden == "secret"


def test_unclosed_block_stays_hidden():
    assert run(["Hello <think>never closed"]) == ("Hello ", "never closed")


def test_partial_tag_at_end_is_text():
    assert run(["a < b and <th"]) == ("a < b and <th", "")


@given(st.text(alphabet="ab<>/thinkx ", max_size=40), st.integers(min_value=1, max_value=7))
def test_chunking_never_changes_the_result(text, size):
    chunks = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    assert run(chunks) == run([text])
