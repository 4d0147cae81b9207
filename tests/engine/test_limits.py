"""Rate-limit policy with time as a parameter (DESIGN.md example 4): no sleeps, no clock."""

from __future__ import annotations

import pytest

from engine.limits import RateLimiter, TokenBuckets
from engine.settings import LimitSettings
from engine.types import Author
from errors import CooldownError

ALICE = Author("u1", "Alice")
BOB = Author("u2", "Bob")
ROOT = Author("u0", "Root", is_operator=True)
# 6 a minute = one token every 10 s; a burst of 3.
SETTINGS = LimitSettings(user_messages_per_minute=6, user_burst=3, room_replies_per_minute=2)


def send(limiter: RateLimiter, author: Author, now: float, times: int = 1):
    return [limiter.user_message(author, "test", now) for _ in range(times)]


def test_burst_then_limited_with_the_wait():
    limiter = RateLimiter(SETTINGS)
    assert send(limiter, ALICE, 0.0, 3) == [None, None, None]
    limited = limiter.user_message(ALICE, "test", 0.0)
    assert limited is not None
    assert limited.retry_after == pytest.approx(10.0)
    assert limited.notice == "slow down: you can write again in 10 s"
    assert limiter.user_message(BOB, "test", 0.0) is None, "buckets are per user"
    assert limiter.user_message(ALICE, "other-platform", 0.0) is None, "ids are per platform"


def test_refill_over_time():
    limiter = RateLimiter(SETTINGS)
    send(limiter, ALICE, 0.0, 3)
    later = limiter.user_message(ALICE, "test", 4.0)
    assert later is not None and later.retry_after == pytest.approx(6.0)
    assert limiter.user_message(ALICE, "test", 10.0) is None, "one token back after 10 s"
    assert limiter.user_message(ALICE, "test", 10.0) is not None
    assert limiter.user_message(BOB, "test", 0.0) is None
    assert send(limiter, BOB, 25.0, 3) == [None, None, None], "2 left + 2.5 back: capped at the burst of 3"
    assert limiter.user_message(BOB, "test", 25.0) is not None


def test_one_notice_per_period_then_silence_then_notice_again():
    limiter = RateLimiter(SETTINGS)
    send(limiter, ALICE, 0.0, 3)
    first = limiter.user_message(ALICE, "test", 1.0)
    assert first is not None and first.notice is not None
    for now in (2.0, 3.0, 9.0):
        quiet = limiter.user_message(ALICE, "test", now)
        assert quiet is not None and quiet.notice is None, "told once: silence until the bucket refills"
    assert limiter.user_message(ALICE, "test", 10.0) is None
    still = limiter.user_message(ALICE, "test", 11.0)
    assert still is not None and still.notice is None, "the period lasts until the bucket is full again"
    assert limiter.user_message(ALICE, "test", 35.0) is None, "2.4 tokens back, one taken"
    assert send(limiter, ALICE, 50.0, 3) == [None, None, None], "full again at 50 s (the bucket was kept)"
    again = limiter.user_message(ALICE, "test", 50.0)
    assert again is not None and again.notice == "slow down: you can write again in 10 s", "a new period"


def test_operators_are_exempt():
    limiter = RateLimiter(SETTINGS)
    assert send(limiter, ROOT, 0.0, 100) == [None] * 100
    assert all(limiter.room_reply("test:general", ROOT, 0.0) is None for _ in range(100))


def test_zero_turns_a_limit_off():
    limiter = RateLimiter(LimitSettings(user_messages_per_minute=0, user_burst=1, room_replies_per_minute=0))
    assert send(limiter, ALICE, 0.0, 1000) == [None] * 1000
    assert all(limiter.room_reply("test:general", ALICE, 0.0) is None for _ in range(1000))
    assert len(limiter.users) == 0 and len(limiter.rooms) == 0


def test_room_reply_cap():
    limiter = RateLimiter(SETTINGS)  # 2 replies a minute, a minute's worth at once
    assert limiter.room_reply("test:general", ALICE, 0.0) is None
    assert limiter.room_reply("test:general", BOB, 0.0) is None
    capped = limiter.room_reply("test:general", ALICE, 5.0)
    assert capped is not None and capped.retry_after == pytest.approx(25.0)
    assert capped.notice == "this room is busy: replies resume in 25 s"
    quiet = limiter.room_reply("test:general", BOB, 6.0)
    assert quiet is not None and quiet.notice is None, "one notice per room per period"
    assert limiter.room_reply("test:other", ALICE, 6.0) is None, "rooms are separate"
    assert limiter.room_reply("test:general", ALICE, 30.0) is None


def test_cooldown_error_carries_the_wait():
    limiter = RateLimiter(SETTINGS)
    send(limiter, ALICE, 0.0, 3)
    error = limiter.user_message(ALICE, "test", 0.0).error()
    assert isinstance(error, CooldownError) and error.retry_after == pytest.approx(10.0)
    assert str(error) == "slow down: you can write again in 10 s"


def test_idle_full_buckets_are_dropped():
    buckets = TokenBuckets(per_minute=60, capacity=5)  # refills from empty in 5 s
    for i in range(1000):
        buckets.hit(f"user{i}", now=i * 0.01)  # 1,000 users within 10 s
    assert len(buckets) <= 501, "buckets idle for 5 s are full, so they are dropped"
    buckets.hit("late", now=1000.0)
    assert len(buckets) == 1


def test_bucket_count_has_a_hard_cap():
    buckets = TokenBuckets(per_minute=1, capacity=8, max_buckets=100)  # 8 minutes to refill
    for i in range(10_000):
        buckets.hit(f"user{i}", now=float(i))
    assert len(buckets) == 100


def test_a_dropped_bucket_behaves_like_the_one_it_replaced():
    buckets = TokenBuckets(per_minute=60, capacity=2)
    assert buckets.hit("a", 0.0) is None and buckets.hit("a", 0.0) is None
    refused = buckets.hit("a", 0.0)
    assert refused is not None and refused.first
    buckets.hit("b", 100.0)  # "a" is long full: dropped
    assert len(buckets) == 1
    assert buckets.hit("a", 100.0) is None and buckets.hit("a", 100.0) is None
    again = buckets.hit("a", 100.0)
    assert again is not None and again.first, "a new period: the notice comes again"


def test_a_clock_stepping_back_adds_no_tokens():
    buckets = TokenBuckets(per_minute=60, capacity=1)
    assert buckets.hit("a", 100.0) is None
    assert buckets.hit("a", 50.0) is not None
    assert buckets.hit("a", 100.5) is not None
    assert buckets.hit("a", 101.0) is None
