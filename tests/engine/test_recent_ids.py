"""The bounded set of the bot's own message ids (used to spot replies to the bot)."""

from adapters.recent_ids import RecentIds


def test_only_the_newest_ids_are_kept():
    recent: RecentIds[str] = RecentIds(3)
    for item in ("a", "b", "c", "d"):
        recent.add(item)
    assert "a" not in recent
    assert all(item in recent for item in ("b", "c", "d"))
    assert len(recent) == 3
