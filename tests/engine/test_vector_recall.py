"""Vector recall with the real embedder (all-MiniLM-L6-v2 as GGUF) on a real SQLite store and the real model.

The planted fact and the question share no uncommon word, so only the vector path can find it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.commands.core import CommandContext
from engine.embedder import EMBEDDER_FILE
from engine.recall import Recall
from engine.settings import MemorySettings
from engine.types import Author, IncomingMessage, RoomRef
from errors import ModelError
from memory import ConversationKey
from tests.conftest import MODELS
from tests.test_config import check

ANN = Author("u1", "Ann")
FACT = "My sister Ingrid moved to Lisbon last spring."
QUESTION = "Which city does my sibling live in now?"
LETTER = [
    "The garden needs new fences before winter, and the roses should be cut back in October.",
    "Our quarterly budget review showed higher costs for heating and the roof repairs.",
    "The football club meets on Thursdays; bring boots and a water bottle to training.",
    "Remember to renew the car insurance and book the annual service at the garage.",
]
FILLER = [
    ("user", "What should I cook tonight?"),
    ("assistant", "A vegetable soup is quick and warm."),
    ("user", "Good idea, thanks. Any dessert?"),
    ("assistant", "Baked apples with cinnamon."),
]


@pytest.fixture
def embedder_path() -> Path:
    path = MODELS / EMBEDDER_FILE
    if not path.is_file():
        pytest.fail(f"{EMBEDDER_FILE} is missing: run `make test` or `bot.py models pull all-minilm-l6-v2`")
    return path


async def plant(app, ref: RoomRef) -> int:
    """The fact, then enough filler and a summary (without it) that it has left the window."""
    store = app.store
    cid = (await app.conversation.room(ref)).conversation_id
    await store.append(cid, role="user", author_id=ANN.id, author_name=ANN.display_name, text=FACT)
    last = None
    for role, said in FILLER * 3:
        author = (ANN.id, ANN.display_name) if role == "user" else ("hearth", "Hearth")
        last = await store.append(cid, role=role, author_id=author[0], author_name=author[1], text=said)
    await store.save_summary(cid, "Ann and Hearth talked about dinner and dessert.", last.id)
    for role, said in FILLER[:2]:  # the recent turns, in view
        author = (ANN.id, ANN.display_name) if role == "user" else ("hearth", "Hearth")
        await store.append(cid, role=role, author_id=author[0], author_name=author[1], text=said)
    return cid


async def prompt_text(app, ref: RoomRef, question: str) -> str:
    conv = app.conversation
    await conv.remember(IncomingMessage(ref, ANN, question))
    await conv.prompts.recall.index_all()  # what the background indexer does between turns
    prompt = await conv.prompts.build(app.host.require(), await conv.room_turn(ref), "Ann", 48)
    return "\n".join(message.content for message in prompt.messages)


async def test_a_paraphrased_question_recalls_the_fact_by_vector_and_forget_me_removes_it(app, embedder_path):
    recall = app.conversation.prompts.recall
    ref = RoomRef("test", "vectors")
    await plant(app, ref)
    text = await prompt_text(app, ref, QUESTION)
    assert f"] Ann: {FACT}" in text, text
    assert text.index("Lisbon") > text.index("vegetable soup"), "recall goes after the recent turns"

    recall.mode = "fulltext"
    try:
        assert "Lisbon" not in await prompt_text(app, ref, QUESTION), "full text alone cannot find it"
    finally:
        recall.mode = "hybrid"

    shown = await app.conversation.run_command(f"memory search {QUESTION}", CommandContext(ref, ANN))
    assert shown.ok and f"Ann: {FACT}" in shown.text, shown.text

    await app.conversation.run_command("memory forget-me", CommandContext(ref, ANN))
    assert "Lisbon" not in await prompt_text(app, ref, QUESTION), "forget-me removes it from recall"


async def test_recall_never_crosses_rooms_or_threads(app, embedder_path):
    await plant(app, RoomRef("test", "their-room"))
    assert "Lisbon" not in await prompt_text(app, RoomRef("test", "my-room"), QUESTION)
    assert "Lisbon" not in await prompt_text(app, RoomRef("test", "their-room", "a-thread"), QUESTION)


async def test_the_channel_scope_lets_a_thread_recall_its_room(app, embedder_path):
    await plant(app, RoomRef("test", "channel"))
    store = app.store
    recall = Recall(store, MemorySettings(recall_scope="channel"), MODELS)
    await recall.start()
    try:
        await recall.index_all()
        thread = await store.conversation_id(ConversationKey("test", "channel", "t1"))
        elsewhere = await store.conversation_id(ConversationKey("test", "other-channel"))
        assert "Lisbon" in (await recall.search(thread, QUESTION, 4))[0].text
        assert await recall.search(elsewhere, QUESTION, 4) == []
    finally:
        await recall.close()


async def test_small_talk_recalls_nothing(app, embedder_path):
    ref = RoomRef("test", "small-talk")
    await plant(app, ref)
    recall = app.conversation.prompts.recall
    cid = (await app.conversation.room(ref)).conversation_id
    await recall.index_all()
    for said in ("ok lol", "haha yes", "The bus was late again this morning."):
        assert await recall.search(cid, said, 8) == [], said
    # close to the fact in meaning, but it asks nothing: vectors are only asked for a question
    assert await recall.search(cid, "My aunt relocated to Portugal a while ago.", 8) == []
    assert "Lisbon" in (await recall.search(cid, "Did my aunt relocate to Portugal a while ago?", 8))[0].text


async def test_memory_show_reports_the_index_and_its_model(app, embedder_path):
    ref = RoomRef("test", "show")
    await plant(app, ref)
    await app.conversation.prompts.recall.index_all()
    shown = await app.conversation.run_command("memory show", CommandContext(ref, ANN))
    assert "recall index: 15 messages in full text, 15 with vectors; embedding model all-MiniLM-L6-v2.F16" in shown.text


async def test_the_index_is_rebuilt_when_the_embedding_model_changes(app, embedder_path, tmp_path):
    store = app.store
    cid = await plant(app, RoomRef("test", "rebuild"))
    first = app.conversation.prompts.recall
    await first.index_all()
    assert (await first.vectors.stats(cid, first.model)).vectors == 15
    other = tmp_path / "another-embedder.gguf"
    shutil.copyfile(embedder_path, other)
    second = Recall(store, MemorySettings(embedding_model=str(other)), MODELS)
    await second.start()
    try:
        assert second.model == "another-embedder"
        assert (await second.vectors.stats(cid, first.model)).vectors == 0, "the old model's vectors are gone"
        await second.index_all()
        assert (await second.vectors.stats(cid, second.model)).vectors == 15
        assert "Lisbon" in (await second.search(cid, QUESTION, 4))[0].text
    finally:
        await second.close()


async def test_a_missing_embedding_model_is_one_line_at_check_and_at_start(config_file, tmp_path, embedder_path):
    missing = tmp_path / "nowhere.gguf"
    result = check(config_file, f"memory:\n  embedding_model: {missing}\n")
    assert result.returncode == 1
    assert f"memory.embedding_model: no embedding model file '{missing}'" in result.stdout, result.stdout
    assert check(config_file, "memory:\n  embedding_model: 'off'\n").returncode == 0

    recall = Recall(None, MemorySettings(embedding_model=str(missing)), MODELS)  # type: ignore[arg-type]
    with pytest.raises(ModelError) as error:
        await recall.start()
    assert "\n" not in str(error.value) and "nowhere.gguf" in str(error.value)


async def test_a_fact_deep_inside_a_long_message_is_recalled_as_the_part_that_holds_it(app, embedder_path):
    """The embedder reads 512 tokens: a pasted document is indexed in chunks, and the recalled line
    is the chunk that matched, not the document's beginning."""
    ref = RoomRef("test", "long-paste")
    cid = (await app.conversation.room(ref)).conversation_id
    news = "\n\n".join(LETTER * 40)
    document = f"{news}\n\nFamily news: {FACT} She loves the trams there.\n\n{news}"  # ~30 KB, the fact mid-way
    await app.store.append(cid, role="user", author_id=ANN.id, author_name=ANN.display_name, text=document)
    for role, said in FILLER:
        author = (ANN.id, ANN.display_name) if role == "user" else ("hearth", "Hearth")
        await app.store.append(cid, role=role, author_id=author[0], author_name=author[1], text=said)
    recall = app.conversation.prompts.recall
    await recall.index_all()
    stats = await recall.vectors.stats(cid, recall.model)
    assert (stats.messages, stats.vectors) == (5, 5), "chunks count as one message in memory show"
    recall.mode = "vector"
    try:
        hits = await recall.search(cid, QUESTION, 3)
    finally:
        recall.mode = "hybrid"
    assert hits and "Lisbon" in hits[0].text and hits[0].text.startswith("…"), hits[:1]
    assert len(hits[0].text) < 500 and len(document) > 25_000


async def indexed(recall: Recall, cid: int) -> int:
    return (await recall.vectors.stats(cid, recall.model)).vectors


async def test_the_background_indexer_waits_for_the_replies_to_end(app, embedder_path, monkeypatch):
    """Indexing runs between replies (``quiet``), not beside generation; under constant load it
    still runs after ``QUIET_WAIT_S``, so the index keeps up."""
    import asyncio

    import engine.recall

    cid = await plant(app, RoomRef("test", "quiet"))
    replies_over = asyncio.Event()
    monkeypatch.setattr(engine.recall, "QUIET_WAIT_S", 30.0)
    recall = Recall(app.store, MemorySettings(), MODELS, quiet=replies_over.wait)
    await recall.start()
    try:
        await asyncio.sleep(1.0)  # the indexer has looked: a reply is still "generating"
        assert await indexed(recall, cid) == 0
        replies_over.set()
        async with asyncio.timeout(60):
            while await indexed(recall, cid) < 15:
                await asyncio.sleep(0.05)
    finally:
        await recall.close()
    busy_forever = asyncio.Event()
    monkeypatch.setattr(engine.recall, "QUIET_WAIT_S", 0.05)
    other = await plant(app, RoomRef("test", "loaded"))
    recall = Recall(app.store, MemorySettings(), MODELS, quiet=busy_forever.wait)
    await recall.start()
    try:
        async with asyncio.timeout(60):
            while await indexed(recall, other) < 15:
                await asyncio.sleep(0.05)
    finally:
        await recall.close()
