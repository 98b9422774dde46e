"""Tombstones: bounded in all, and past the bound the source holding the most forgets
its oldest, so one source's flood of ended keys never forgets another's."""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.tombstones import MessageKey, Tombstones

LATE = DropReason.LATE_FRAGMENT
HONEST: Address = ("10.0.0.1", 1)
FLOODER: Address = ("10.0.0.2", 2)


def key(source: Address, n: int) -> MessageKey:
    return source, n.to_bytes(4, "big")


def test_a_flood_from_one_source_forgets_its_own_oldest() -> None:
    tombstones = Tombstones(limit=100)
    tombstones.bury(key(HONEST, 0), 5.0, LATE)
    for n in range(10_000):
        tombstones.bury(key(FLOODER, n), 6.0, DropReason.INVALID_FRAGMENT)
    assert len(tombstones) == 100
    assert tombstones.get(key(HONEST, 0)) == (5.0, LATE)
    assert tombstones.holding(FLOODER) == 99
    assert tombstones.get(key(FLOODER, 9_900)) is None
    assert tombstones.get(key(FLOODER, 9_901)) is not None


def test_the_heaviest_pays_and_of_equals_the_first_to_hold_that_many() -> None:
    tombstones = Tombstones(limit=4)
    for n in range(3):
        tombstones.bury(key(FLOODER, n), 5.0, LATE)
    tombstones.bury(key(HONEST, 0), 5.0, LATE)
    tombstones.bury(key(HONEST, 1), 5.0, LATE)  # the flooder holds 3: its oldest goes
    assert tombstones.get(key(FLOODER, 0)) is None
    tombstones.bury(key(HONEST, 2), 5.0, LATE)  # now the honest source holds the most
    assert tombstones.get(key(HONEST, 0)) is None
    assert (tombstones.holding(FLOODER), tombstones.holding(HONEST)) == (2, 2)
    tombstones.bury(key(("10.0.0.3", 3), 0), 5.0, LATE)  # 2 each: the flooder had 2 first
    assert tombstones.get(key(FLOODER, 1)) is None
    assert (tombstones.holding(FLOODER), tombstones.holding(HONEST)) == (1, 2)


def test_buried_again_a_key_moves_to_the_back_and_counts_once() -> None:
    tombstones = Tombstones(limit=10)
    tombstones.bury(key(HONEST, 0), 5.0, LATE)
    tombstones.bury(key(HONEST, 1), 6.0, LATE)
    tombstones.bury(key(HONEST, 0), 9.0, DropReason.OVERLOADED)
    assert tombstones.holding(HONEST) == 2
    tombstones.forget_ended(6.0)  # key 1 was at the front now
    assert tombstones.get(key(HONEST, 1)) is None
    assert tombstones.get(key(HONEST, 0)) == (9.0, DropReason.OVERLOADED)
    tombstones.forget(key(HONEST, 0))
    assert (len(tombstones), tombstones.holding(HONEST)) == (0, 0)


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 20), st.integers(0, 3)),
        max_size=200,
    ),
    st.integers(1, 12),
)
def test_past_the_bound_a_source_holding_the_most_loses_its_oldest(
    buries: list[tuple[int, int, int]], limit: int
) -> None:
    """Against a model that counts by brute force: each tombstone forgotten for room was
    the oldest of a source holding the most; ``forget_ended`` at times interleaved."""
    tombstones = Tombstones(limit)
    model: dict[MessageKey, float] = {}  # in burial order
    for now, (source, n, later) in enumerate(buries):
        tombstones.forget_ended(float(now))
        while model and next(iter(model.values())) <= now:
            del model[next(iter(model))]
        buried = key((f"10.0.0.{source}", 1), n)
        model.pop(buried, None)
        model[buried] = now + 1.0 + later
        tombstones.bury(buried, model[buried], LATE)
        if len(model) > limit:
            held = Counter(k[0] for k in model)
            most = max(held.values())
            forgotten = next(k for k in model if tombstones.get(k) is None)
            assert held[forgotten[0]] == most
            assert forgotten == next(k for k in model if k[0] == forgotten[0])
            del model[forgotten]
        assert [k for k in model if tombstones.get(k) is not None] == list(model)
        assert len(tombstones) == len(model)
        held = Counter(k[0] for k in model)
        assert all(tombstones.holding(s) == n for s, n in held.items())
