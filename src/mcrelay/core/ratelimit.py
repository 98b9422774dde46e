"""Token buckets per source and in total: for answers to key requests (a small request
earns a large answer) and for registrations (each tells every member)."""

import math
from collections import OrderedDict
from dataclasses import dataclass

from mcrelay.protocol.addresses import Address

MAX_TRACKED_SOURCES = 65536


@dataclass(slots=True)
class TokenBucket:
    burst: float
    rate_per_s: float
    tokens: float
    updated: float

    def refill(self, now: float) -> bool:
        """Add what ``now`` earned; is there a token?"""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        return self.tokens >= 1

    def take(self, now: float) -> bool:
        if self.refill(now):
            self.tokens -= 1
            return True
        return False

    def reserve(self, now: float) -> float:
        """Take a token, ahead of time if there is none: how long until it is earned."""
        self.refill(now)
        self.tokens -= 1
        return max(0.0, -self.tokens / self.rate_per_s)


class SourceLimiter:
    """A bucket per source and one in total; a source is tracked while its bucket is not full.

    Until :meth:`configure` gives it rates, it allows nothing."""

    def __init__(self, *, max_sources: int = MAX_TRACKED_SOURCES) -> None:
        self._per_source_burst = 0
        self._per_source_per_s = 0.0
        self._refill_s = 0.0
        """How long an emptied source bucket takes to fill again."""
        # Full, whatever burst the first configure() gives it; empty until then.
        self._total = TokenBucket(0, 0.0, math.inf, 0.0)
        self._sources: OrderedDict[Address, TokenBucket] = OrderedDict()
        self._max_sources = max_sources

    def configure(
        self,
        *,
        per_source_burst: int,
        per_source_per_s: float,
        total_burst: int,
        total_per_s: float,
    ) -> None:
        """New rates; buckets keep their tokens (capped at the new bursts)."""
        self._per_source_burst = per_source_burst
        self._per_source_per_s = per_source_per_s
        self._refill_s = per_source_burst / per_source_per_s
        self._total.burst, self._total.rate_per_s = total_burst, total_per_s
        self._total.tokens = min(self._total.tokens, total_burst)
        for bucket in self._sources.values():
            bucket.burst, bucket.rate_per_s = per_source_burst, per_source_per_s
            bucket.tokens = min(bucket.tokens, per_source_burst)

    @property
    def tracked_sources(self) -> int:
        """Sources it remembers (their buckets not full again): what it holds in memory."""
        return len(self._sources)

    def allow(self, source: Address, now: float) -> bool:
        self._forget_refilled(now)
        bucket = self._sources.pop(source, None)
        if bucket is None:
            bucket = TokenBucket(self._per_source_burst, self._per_source_per_s, 0.0, now)
            bucket.tokens = self._per_source_burst
        self._sources[source] = bucket
        if len(self._sources) > self._max_sources:
            # Only reachable under a spoofed-source storm; forgetting the stalest
            # source errs towards answering, and the total bucket still caps it.
            self._sources.popitem(last=False)
        # Both or neither: a source is not charged for what the total refused.
        if bucket.refill(now) and self._total.refill(now):
            bucket.tokens -= 1
            self._total.tokens -= 1
            return True
        return False

    def total_room(self, now: float) -> bool:
        """Would the total allow one more now?"""
        return self._total.refill(now)

    def _forget_refilled(self, now: float) -> None:
        while self._sources:
            bucket = next(iter(self._sources.values()))
            if now - bucket.updated < self._refill_s:
                break
            self._sources.popitem(last=False)
