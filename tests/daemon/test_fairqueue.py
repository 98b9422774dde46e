"""The crypto workers' queue: hosts' lines, and their owners' within them, taken in
turns weighted by cost."""

from collections import Counter
from itertools import cycle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.daemon.fairqueue import FairQueue

QUANTUM = 8

Job = tuple[str, str, int, int]
"""A job as these tests push it: its host, its owner, its number in the owner's line,
its cost."""

OWNERS = {"a": "h1", "b": "h1", "c": "h2", "d": "h3"}
"""The owners these tests push for, and their hosts: two share one."""
HOSTS = frozenset(OWNERS.values())

pushes = st.tuples(st.sampled_from(sorted(OWNERS)), st.integers(min_value=1, max_value=QUANTUM))
steps = st.lists(pushes | st.just("pop"), max_size=200)


def test_one_owners_backlog_does_not_hold_another_owners_job() -> None:
    queue: FairQueue[str] = FairQueue(QUANTUM)
    for n in range(100):
        queue.push("h1", "flood", f"flood {n}", QUANTUM)
    queue.push("h1", "other", "other", 1)
    assert [queue.pop() for _ in range(3)] == ["flood 0", "other", "flood 1"]
    assert (len(queue), queue.hosts, queue.owners) == (98, 1, 1)


def test_one_hosts_many_owners_take_one_hosts_turns_against_another_host() -> None:
    """Each of 50 owners on one host has jobs waiting; another host's one owner gets
    every other turn, not one in 51 (review 15: turns per owner)."""
    queue: FairQueue[str] = FairQueue(QUANTUM)
    for owner in range(50):
        for n in range(2):
            queue.push("sybil", f"s{owner}", f"s{owner} {n}", QUANTUM)
    for n in range(3):
        queue.push("honest", "h", f"h {n}", QUANTUM)
    taken = [queue.pop() for _ in range(6)]
    assert taken == ["s0 0", "h 0", "s1 0", "h 1", "s2 0", "h 2"]
    assert (queue.hosts, queue.owners) == (1, 50)


def test_a_job_dearer_than_a_quantum_waits_turns_while_others_cheaper_are_taken() -> None:
    queue: FairQueue[str] = FairQueue(QUANTUM)
    queue.push("h1", "large", "large", 3 * QUANTUM)
    for n in range(4):
        queue.push("h2", "small", f"small {n}", QUANTUM)
    assert [queue.pop() for _ in range(5)] == ["small 0", "small 1", "large", "small 2", "small 3"]


def test_a_host_and_an_owner_save_up_no_credit_while_their_line_is_empty() -> None:
    queue: FairQueue[str] = FairQueue(QUANTUM)
    queue.push("h1", "a", "a cheap", 1)
    assert queue.pop() == "a cheap"  # its turn ended with its line: the rest is lost
    queue.push("h2", "b", "b 0", QUANTUM)
    queue.push("h2", "b", "b 1", QUANTUM)
    queue.push("h1", "a", "a 0", QUANTUM)
    queue.push("h1", "a", "a 1", QUANTUM - 1)  # within the credit a saved up, were it saved
    assert [queue.pop() for _ in range(4)] == ["b 0", "a 0", "b 1", "a 1"]


def test_bad_costs_and_quanta_and_an_empty_pop_are_refused() -> None:
    with pytest.raises(ValueError, match="quantum is at least 1"):
        FairQueue[str](0)
    queue: FairQueue[str] = FairQueue(QUANTUM)
    with pytest.raises(ValueError, match="cost is at least 1"):
        queue.push("h1", "a", "free", 0)
    with pytest.raises(IndexError):
        queue.pop()


@given(
    st.integers(min_value=1, max_value=40),
    st.lists(st.integers(min_value=1, max_value=3 * QUANTUM), min_size=1, max_size=20),
    st.lists(st.integers(min_value=1, max_value=3 * QUANTUM), min_size=1, max_size=20),
)
def test_a_host_with_many_owners_gets_one_hosts_share(
    owners: int, sybil_costs: list[int], honest_costs: list[int]
) -> None:
    """Two hosts that always have jobs waiting, one of them for ``owners`` owners: at
    every pop, neither was served more than the other by more than a quantum and two
    of the dearest jobs (deficit round robin's bound), whatever the number of owners."""
    queue: FairQueue[tuple[str, str, int]] = FairQueue(QUANTUM)
    costs = {"sybil": cycle(sybil_costs), "honest": cycle(honest_costs)}

    def push(host: str, owner: str) -> None:
        cost = next(costs[host])
        queue.push(host, owner, (host, owner, cost), cost)

    for _ in range(2):  # refilled as taken: no line ever empties
        for n in range(owners):
            push("sybil", f"s{n}")
        push("honest", "h")
    served: Counter[str] = Counter()
    bound = QUANTUM + 2 * max(*sybil_costs, *honest_costs)
    for _ in range(200):
        host, owner, cost = queue.pop()
        served[host] += cost
        push(host, owner)
        assert abs(served["sybil"] - served["honest"]) < bound


@given(steps)
def test_every_job_is_taken_once_in_its_owners_order_within_a_round(
    steps: list[tuple[str, int] | str],
) -> None:
    """Jobs cost at most a quantum here: a host's job at the head of a line that was
    empty is taken before any other host is given a second turn, so before each of
    them is served twice a quantum (the rest of one turn's credit, and one more); and
    likewise an owner's against the other owners of its host."""
    queue: FairQueue[Job] = FairQueue(QUANTUM)
    pushed: list[Job] = []
    taken: list[Job] = []
    waiting: dict[str, Counter[str]] = {}
    """Per host or owner whose line was empty when its first job waiting came: the cost
    served since to each other host, or to each other owner of its host."""
    lines: Counter[str] = Counter()
    for step in [*steps, *["pop"] * len(steps)]:
        if isinstance(step, tuple):
            owner, cost = step
            host = OWNERS[owner]
            job = (host, owner, sum(o == owner for _, o, _, _ in pushed), cost)
            queue.push(host, owner, job, cost)
            pushed.append(job)
            for line in (host, owner):
                if not lines[line]:
                    waiting[line] = Counter()
                lines[line] += 1
        elif queue:
            job = queue.pop()
            host, owner, _, cost = job
            taken.append(job)
            for line in (host, owner):
                lines[line] -= 1
                waiting.pop(line, None)
            for line, served in waiting.items():
                if line in HOSTS:
                    served[host] += cost
                    assert served[host] < 2 * QUANTUM
                elif OWNERS[line] == host:
                    served[owner] += cost
                    assert served[owner] < 2 * QUANTUM
        assert len(queue) == len(pushed) - len(taken)
        assert queue.hosts == sum(1 for host in HOSTS if lines[host])
        assert queue.owners == sum(1 for o in OWNERS if lines[o])
    assert sorted(taken) == sorted(pushed)
    for owner in OWNERS:
        assert [job for job in taken if job[1] == owner] == [j for j in pushed if j[1] == owner]
