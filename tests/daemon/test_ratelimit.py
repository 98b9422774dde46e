"""SourceLimiter: token buckets per source and in total, with explicit ``now``."""

import pytest

from mcrelay.core.ratelimit import SourceLimiter, TokenBucket
from mcrelay.protocol.addresses import Address

A: Address = ("127.0.0.1", 50001)
B: Address = ("127.0.0.1", 50002)


def source(n: int) -> Address:
    return (f"10.0.{n // 250}.{n % 250 + 1}", 6000 + n)


def limiter(
    *,
    per_source_burst: int = 5,
    per_source_per_s: float = 1.0,
    total_burst: int = 1000,
    total_per_s: float = 1000.0,
    max_sources: int = 65536,
) -> SourceLimiter:
    limit = SourceLimiter(max_sources=max_sources)
    limit.configure(
        per_source_burst=per_source_burst,
        per_source_per_s=per_source_per_s,
        total_burst=total_burst,
        total_per_s=total_per_s,
    )
    return limit


def allowed(limit: SourceLimiter, address: Address, now: float, times: int) -> int:
    return sum(limit.allow(address, now) for _ in range(times))


def test_per_source_burst_then_one_a_second() -> None:
    limit = limiter()
    now = 100.0
    assert [limit.allow(A, now) for _ in range(6)] == [True] * 5 + [False]
    assert limit.allow(A, now + 0.5) is False  # half a token
    assert limit.allow(A, now + 1.0) is True  # the other half arrived
    assert limit.allow(A, now + 1.0) is False
    assert allowed(limit, A, now + 3.0, 5) == 2  # two seconds, two tokens
    assert allowed(limit, A, now + 3.5, 5) == 0


def test_refill_never_exceeds_the_burst() -> None:
    limit = limiter()
    assert allowed(limit, A, 0.0, 10) == 5
    assert allowed(limit, A, 4.0, 10) == 4
    assert allowed(limit, A, 1000.0, 10) == 5


def test_total_caps_many_sources() -> None:
    limit = limiter(total_burst=10, total_per_s=2.0)
    assert sum(limit.allow(source(n), 0.0) for n in range(50)) == 10
    assert sum(limit.allow(source(n), 1.0) for n in range(50, 100)) == 2
    assert sum(limit.allow(source(n), 1.0) for n in range(100, 150)) == 0
    assert sum(limit.allow(source(n), 6.0) for n in range(150, 200)) == 10


def test_one_source_does_not_limit_another() -> None:
    limit = limiter()
    assert allowed(limit, A, 0.0, 20) == 5
    assert allowed(limit, B, 0.0, 20) == 5
    assert limit.allow(A, 0.0) is False


def test_tracked_sources_are_bounded() -> None:
    limit = limiter(per_source_burst=1, per_source_per_s=0.001, max_sources=3)
    a, b, c, d = (source(n) for n in range(4))
    assert limit.allow(a, 0.0) is True
    assert limit.allow(a, 0.0) is False
    assert limit.allow(b, 0.0) is True
    assert limit.allow(c, 0.0) is True
    assert limit.allow(a, 0.0) is False  # three sources tracked: a is still remembered
    # d makes four: the stalest (b; a just moved to the back) is forgotten.
    assert limit.allow(d, 0.0) is True
    assert limit.allow(a, 0.0) is False
    assert limit.allow(b, 0.0) is True  # forgotten, so a fresh bucket
    for n in range(10, 1010):
        limit.allow(source(n), 0.0)
    assert limit.tracked_sources == 3


def test_refilled_sources_are_forgotten() -> None:
    limit = limiter(per_source_burst=5, per_source_per_s=1.0)
    for n in range(100):
        limit.allow(source(n), 0.0)
    assert limit.tracked_sources == 100
    limit.allow(A, 4.9)
    assert limit.tracked_sources == 101
    limit.allow(A, 5.0)  # five seconds refill five tokens: the 100 are full again
    assert limit.tracked_sources == 1


def test_nothing_is_allowed_until_configured_then_the_total_burst_is_whole() -> None:
    limit = SourceLimiter()
    assert not limit.allow(A, 100.0)
    limit = SourceLimiter()
    limit.configure(per_source_burst=10, per_source_per_s=1.0, total_burst=3, total_per_s=1.0)
    assert allowed(limit, A, 0.0, 5) == 3


def test_a_source_is_not_charged_for_what_the_total_refused() -> None:
    """Its token was spent when the total said no: a host's burst went on refusals."""
    limit = limiter(per_source_burst=2, per_source_per_s=0.001, total_burst=1, total_per_s=1.0)
    assert limit.allow(B, 0.0)  # the total's one token
    assert not limit.allow(A, 0.0)
    assert not limit.allow(A, 0.0)
    assert not limit.total_room(0.5)
    assert limit.total_room(1.0)
    assert limit.allow(A, 1.0)  # A still had both of its tokens
    assert limit.allow(A, 2.0)


def test_a_reserved_token_is_taken_ahead_and_its_wait_is_said() -> None:
    bucket = TokenBucket(2, 10.0, 2, 100.0)
    assert [bucket.reserve(100.0) for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.2])
    assert bucket.reserve(100.3) == pytest.approx(0.0)  # the debt paid, and one earned
    assert bucket.take(100.3) is False
