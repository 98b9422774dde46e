"""The crypto workers' queue: owners' lines taken in turns weighted by cost."""

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.daemon.fairqueue import FairQueue

QUANTUM = 8

Job = tuple[str, int, int]
"""A job as these tests push it: its owner, its number in the owner's line, its cost."""

pushes = st.tuples(st.sampled_from("abcd"), st.integers(min_value=1, max_value=QUANTUM))
steps = st.lists(pushes | st.just("pop"), max_size=200)


def test_one_owners_backlog_does_not_hold_another_owners_job() -> None:
    queue: FairQueue[str] = FairQueue(QUANTUM)
    for n in range(100):
        queue.push("flood", f"flood {n}", QUANTUM)
    queue.push("other", "other", 1)
    assert [queue.pop() for _ in range(3)] == ["flood 0", "other", "flood 1"]
    assert (len(queue), queue.owners) == (98, 1)


def test_a_job_dearer_than_a_quantum_waits_turns_while_others_cheaper_are_taken() -> None:
    queue: FairQueue[str] = FairQueue(QUANTUM)
    queue.push("large", "large", 3 * QUANTUM)
    for n in range(4):
        queue.push("small", f"small {n}", QUANTUM)
    assert [queue.pop() for _ in range(5)] == ["small 0", "small 1", "large", "small 2", "small 3"]


def test_an_owner_saves_up_no_credit_while_its_line_is_empty() -> None:
    queue: FairQueue[str] = FairQueue(QUANTUM)
    queue.push("a", "a cheap", 1)
    assert queue.pop() == "a cheap"  # its turn ended with its line: the rest is lost
    queue.push("b", "b 0", QUANTUM)
    queue.push("b", "b 1", QUANTUM)
    queue.push("a", "a 0", QUANTUM)
    queue.push("a", "a 1", QUANTUM - 1)  # within the credit a saved up, were it saved
    assert [queue.pop() for _ in range(4)] == ["b 0", "a 0", "b 1", "a 1"]


def test_bad_costs_and_quanta_and_an_empty_pop_are_refused() -> None:
    with pytest.raises(ValueError, match="quantum is at least 1"):
        FairQueue[str](0)
    queue: FairQueue[str] = FairQueue(QUANTUM)
    with pytest.raises(ValueError, match="cost is at least 1"):
        queue.push("a", "free", 0)
    with pytest.raises(IndexError):
        queue.pop()


@given(steps)
def test_every_job_is_taken_once_in_its_owners_order_within_a_round(
    steps: list[tuple[str, int] | str],
) -> None:
    """Jobs cost at most a quantum here: an owner's job at the head of a line that was
    empty is taken before any other owner is given a second turn, so before each of
    them is served twice a quantum (the rest of one turn's credit, and one more)."""
    queue: FairQueue[Job] = FairQueue(QUANTUM)
    pushed: list[Job] = []
    taken: list[Job] = []
    waiting: dict[str, Counter[str]] = {}
    """Per owner whose line was empty when its first job waiting came: the cost served
    to each other owner since."""
    lines: Counter[str] = Counter()
    for step in [*steps, *["pop"] * len(steps)]:
        if isinstance(step, tuple):
            owner, cost = step
            job = (owner, sum(o == owner for o, _, _ in pushed), cost)
            queue.push(owner, job, cost)
            pushed.append(job)
            if not lines[owner]:
                waiting[owner] = Counter()
            lines[owner] += 1
        elif queue:
            job = queue.pop()
            owner, _, cost = job
            taken.append(job)
            lines[owner] -= 1
            waiting.pop(owner, None)
            for served in waiting.values():
                served[owner] += cost
                assert served[owner] < 2 * QUANTUM
        assert len(queue) == len(pushed) - len(taken)
        assert queue.owners == sum(1 for count in lines.values() if count)
    assert sorted(taken) == sorted(pushed)
    for owner in "abcd":
        assert [job for job in taken if job[0] == owner] == [j for j in pushed if j[0] == owner]
