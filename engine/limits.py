"""Rate limits as pure policy: token buckets, with time passed in by the caller.

Like discord.py's ``Cooldown.update_rate_limit(current)``, nothing here sleeps or reads a
clock, so the policy is the same on every platform and its tests pass time as a number.

A user (or room) over its bucket is told once per limited period, with the wait, then left
in silence until the bucket has refilled: a notice for every refused message would itself be
the spam the limit is there to stop. Operators are never limited.

Memory stays bounded: a bucket untouched for as long as it takes to refill from empty is
full, so it is the same as no bucket and is dropped; past ``max_buckets`` live buckets the
least recently used go first (its owner merely gets a fresh burst).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from engine.settings import LimitSettings
from engine.types import Author
from errors import CooldownError

MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float
    noticed: bool = False  # the owner was told during this limited period


@dataclass(frozen=True)
class Limited:
    """A refused message. ``notice`` is the line to show, or None: already told, stay silent."""

    retry_after: float
    message: str
    first: bool

    @property
    def notice(self) -> str | None:
        return self.message if self.first else None

    def error(self) -> CooldownError:
        return CooldownError(self.retry_after, self.message)


@dataclass(frozen=True)
class Refusal:
    """What ``TokenBuckets.hit`` says about a refused hit: the wait, and whether to tell."""

    retry_after: float
    first: bool


class TokenBuckets:
    """One token bucket per key, all with the same refill rate and capacity."""

    def __init__(self, per_minute: float, capacity: float, max_buckets: int = MAX_BUCKETS) -> None:
        self.rate = max(per_minute, 0.0) / 60.0  # tokens per second
        self.capacity = max(float(capacity), 1.0)
        self.max_buckets = max(max_buckets, 1)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently hit first

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str, now: float) -> Refusal | None:
        """Take one token for ``key`` at time ``now`` (seconds). None when allowed."""
        if not self.enabled:
            return None
        self._drop_full(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        first = not bucket.noticed
        bucket.noticed = True
        return Refusal((1.0 - bucket.tokens) / self.rate, first)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(now - bucket.updated, 0.0)  # a clock that steps back adds nothing
        bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate)
        bucket.updated = max(bucket.updated, now)
        if bucket.tokens >= self.capacity:
            bucket.noticed = False  # refilled: the limited period is over

    def _drop_full(self, now: float) -> None:
        """Forget buckets idle long enough to be full again (tokens never go below 0)."""
        refill_s = self.capacity / self.rate
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < refill_s:
                return
            del self._buckets[key]


def _seconds(wait: float) -> int:
    return max(math.ceil(wait - 1e-9), 1)


class RateLimiter:
    """Per-user message limits and per-room reply limits, from ``LimitSettings``.

    A room's bucket holds one minute's worth of replies, so ``room_replies_per_minute``
    reads as what it says: about that many replies a minute, however many people ask.
    """

    def __init__(self, settings: LimitSettings, max_buckets: int = MAX_BUCKETS) -> None:
        self.settings = settings
        self.users = TokenBuckets(settings.user_messages_per_minute, settings.user_burst, max_buckets)
        self.rooms = TokenBuckets(settings.room_replies_per_minute, settings.room_replies_per_minute, max_buckets)

    def user_message(self, author: Author, platform: str, now: float) -> Limited | None:
        """A message or command from ``author``: None when allowed. Ids are per platform."""
        return _check(self.users, f"{platform}:{author.id}", author, now, "slow down: you can write again in {} s")

    def room_reply(self, room_key: str, author: Author, now: float) -> Limited | None:
        """A reply about to be scheduled in ``room_key`` at ``author``'s request: None when allowed."""
        return _check(self.rooms, room_key, author, now, "this room is busy: replies resume in {} s")


def _check(buckets: TokenBuckets, key: str, author: Author, now: float, message: str) -> Limited | None:
    """One hit on ``key``'s bucket, unless ``author`` is an operator; ``message`` takes the wait in seconds."""
    if author.is_operator:
        return None
    refused = buckets.hit(key, now)
    if refused is None:
        return None
    return Limited(refused.retry_after, message.format(_seconds(refused.retry_after)), refused.first)


__all__ = ["MAX_BUCKETS", "Limited", "RateLimiter", "Refusal", "TokenBuckets"]
