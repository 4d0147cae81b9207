"""Whatever people type survives the trip through the database."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory import ConversationKey, MemoryStore

ODD = [
    "👩🏽‍💻 🏳️‍🌈 👨‍👩‍👧‍👦 family",  # ZWJ sequences and skin-tone modifiers
    "שלום עולם مرحبا بالعالم",  # right-to-left scripts
    "\u202eevil override\u202c and \u200fRLM\u200e LRM",  # bidi controls
    "Z\u0351\u0300\u0489a\u0489\u0334l\u0338g\u0337o\u0336",  # stacked combining marks
    "e\u0301 vs \u00e9",  # NFD vs NFC must not be normalized
    "\U0001f600\U000e0067 tag \ufeff BOM \u2028 line sep",
    "tabs\tand\r\nnewlines\n",
    "",
]


async def test_odd_unicode_round_trips_exactly(store):
    room = await store.conversation_id(ConversationKey("console", "unicode 🌍 ✓", "thread ⟶ 🧵"))
    for index, text in enumerate(ODD):
        await store.append(
            room,
            role="user",
            author_id=f"id-{index}",
            author_name="Ünïcødé 名前",
            text=text,
            platform_message_id=f"ṗ{index}",
        )
    stored = await store.messages(room)
    assert [m.text for m in stored] == ODD
    assert all(m.author_name == "Ünïcødé 名前" for m in stored)
    assert (await store.get_message(room, "ṗ3")).text == ODD[3]
    assert await store.find_conversation(ConversationKey("console", "unicode 🌍 ✓", "thread ⟶ 🧵")) == room


async def test_a_100_kb_message_round_trips_and_exports(store):
    room = await store.conversation_id(ConversationKey("console", "big"))
    huge = ("é🙂" * 40_000)[:100_000]
    assert len(huge.encode()) > 100_000
    await store.append(room, role="user", author_id="u", author_name="U", text=huge)
    assert (await store.messages(room))[0].text == huge
    assert (await store.export(room))["messages"][0]["text"] == huge
    await store.save_summary(room, huge, 1)
    assert (await store.summary(room)).text == huge


async def test_unstorable_characters_are_cleaned_not_fatal(store):
    """NUL is refused by PostgreSQL and a lone surrogate by every UTF-8 codec; a Matrix event can carry both."""
    room = await store.conversation_id(ConversationKey("matrix", "!odd"))
    sent = await store.append(room, role="user", author_id="u", author_name="A\ud800", text="a\x00b \ud83d end")
    assert sent.text == "ab \ufffd end" and sent.author_name == "A\ufffd"
    assert (await store.messages(room))[0].text == "ab \ufffd end"
    await store.append(room, role="user", author_id="u", author_name="U", text="x", platform_message_id="p")
    assert (await store.edit_message(room, "p", "fixed\x00")).text == "fixed"
    await store.save_summary(room, "Bad\ud800Summary\x00", 1)
    assert (await store.summary(room)).text == "Bad\ufffdSummary"


storable = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=400)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=storable, name=storable)
async def test_any_storable_text_round_trips(store: MemoryStore, text: str, name: str):
    room = await store.conversation_id(ConversationKey("console", "prop"))
    sent = await store.append(room, role="user", author_id="u", author_name=name, text=text)
    (read,) = await store.messages(room, last=1)
    assert read == sent and read.text == text and read.author_name == name
