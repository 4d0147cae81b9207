"""``discord.max_edits`` through the real path: dpytest message in, real-model reply streamed out."""

from __future__ import annotations

from itertools import count

from adapters.rendering import UNFINISHED_MARKER, defuse_mentions
from tests.discord.conftest import MakeHarness


async def test_a_streamed_reply_is_edited_at_most_max_edits_times(make_harness: MakeHarness):
    harness = await make_harness(max_edits=3, edit_interval=0.2)
    ticks = count()
    harness.adapter.clock = lambda: float(next(ticks))  # a second per look: every chunk may be shown
    channel = harness.channel()

    await harness.say(f"<@{harness.bot.id}> Tell me a short story about a fox and a river.")

    (message,) = harness.bot_messages(channel)
    edits = harness.wire.edits
    assert len(harness.wire.sends) == 1, "one message, edited in place"
    assert 1 <= len(edits) <= 3, f"{len(edits)} edits for max_edits=3"
    stored = await harness.stored(channel)
    assert stored[-1].role == "assistant"
    assert message["content"] == edits[-1]["content"] == defuse_mentions(stored[-1].text.strip())
    assert not message["content"].endswith(UNFINISHED_MARKER.strip())
