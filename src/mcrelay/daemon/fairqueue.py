"""Jobs of many hosts and owners, taken in turn: deficit round robin, weighted by cost,
by host first and then by owner within the host.

The crypto workers took jobs from one FIFO queue, so one member's backlog (up to its
128 messages in flight, each of them as costly as the largest fan-out) held every
other member's message behind it for seconds. Turns per owner (a message's sender)
were not enough either: one host with many ids (a legacy id is an ``ip:port``, a
secure one a key: both are free to make) took a turn for each, and so most of the
workers' time (review 15: 64 legacy ids on one host left an honest pair 10 % of its
messages delivered in time). So the turns are two deep: the hosts take turns, and
within a host's turn its owners take theirs.

At each level a line (a host's, or an owner's within it) is given ``quantum`` more
credit at its turn, and its jobs are taken while their cost is within its credit;
what is left over waits for its next turn (a job dearer than a quantum waits a few
turns), and a line that empties loses its credit (none is saved up while idle). So a
host that has a job waiting gets one taken within a round of the other hosts' turns,
each worth at most a quantum plus one job, however many owners and jobs they have;
within a host, its owners share its turns the same way; and an owner's jobs are
taken in the order it gave them.

Plain data, no I/O, no clock: :class:`~mcrelay.daemon.workers.CryptoWorkers` pushes
and pops on the Trio thread.
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class _Turns:
    """The credit side of a deficit round robin over named lines (the lines themselves
    are the caller's): whose turn it is, and what each may still spend."""

    __slots__ = ("_credit", "_in_turn", "_order", "_quantum")

    def __init__(self, quantum: int) -> None:
        self._quantum = quantum
        self._order: deque[str] = deque()
        """The lines with jobs, the one whose turn it is first."""
        self._credit: dict[str, int] = {}
        self._in_turn = False
        """The first of :attr:`_order` was given its quantum for this turn."""

    def __len__(self) -> int:
        return len(self._order)

    def add(self, name: str) -> None:
        """A line that was empty has a job: it takes its turn after the others."""
        self._order.append(name)
        self._credit[name] = 0

    def choose(self, head_cost: Callable[[str], int]) -> str:
        """The line whose first job is taken next: the first in turn whose credit covers
        that job's cost. It stays the choice until :meth:`spend` (however many times it
        is asked, whatever lines are added meanwhile)."""
        while True:
            name = self._order[0]
            if not self._in_turn:
                self._credit[name] += self._quantum
                self._in_turn = True
            if head_cost(name) <= self._credit[name]:
                return name
            self._order.rotate(-1)
            self._in_turn = False

    def spend(self, name: str, cost: int, *, emptied: bool) -> None:
        """The chosen line's first job was taken; ``emptied``: it was its last."""
        self._credit[name] -= cost
        if emptied:
            del self._credit[name]
            self._order.popleft()
            self._in_turn = False


@dataclass(slots=True, eq=False)
class _Host(Generic[T]):
    turns: _Turns
    """Its owners' turns within its own."""
    lines: dict[str, deque[tuple[T, int]]] = field(default_factory=dict)
    """Per owner with jobs, its jobs and their costs, in the order they came."""

    def head_cost(self, owner: str) -> int:
        return self.lines[owner][0][1]


class FairQueue(Generic[T]):
    """Jobs by host and owner, popped by turns (see the module's docstring)."""

    def __init__(self, quantum: int) -> None:
        if quantum < 1:
            raise ValueError(f"a quantum is at least 1, not {quantum}")
        self._quantum = quantum
        self._hosts: dict[str, _Host[T]] = {}
        self._turns = _Turns(quantum)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def hosts(self) -> int:
        """Hosts with jobs waiting."""
        return len(self._hosts)

    @property
    def owners(self) -> int:
        """Owners with jobs waiting, over all hosts."""
        return sum(len(host.lines) for host in self._hosts.values())

    def push(self, host: str, owner: str, job: T, cost: int) -> None:
        """Queue ``job`` at the end of ``owner``'s line, within ``host``'s; a host (an owner
        within its host) that had none takes its turn after those who have."""
        if cost < 1:
            raise ValueError(f"a job's cost is at least 1, not {cost}")
        held = self._hosts.get(host)
        if held is None:
            held = self._hosts[host] = _Host(_Turns(self._quantum))
            self._turns.add(host)
        line = held.lines.get(owner)
        if line is None:
            line = held.lines[owner] = deque()
            held.turns.add(owner)
        line.append((job, cost))
        self._size += 1

    def pop(self) -> T:
        """The next job, by turns (IndexError when none waits)."""
        if not self._size:
            raise IndexError("pop from an empty FairQueue")
        name = self._turns.choose(self._head_cost)
        host = self._hosts[name]
        owner = host.turns.choose(host.head_cost)  # the one _head_cost chose: it stays
        line = host.lines[owner]
        job, cost = line.popleft()
        if not line:
            del host.lines[owner]
        host.turns.spend(owner, cost, emptied=not line)
        if not host.lines:
            del self._hosts[name]
        self._turns.spend(name, cost, emptied=not host.lines)
        self._size -= 1
        return job

    def _head_cost(self, name: str) -> int:
        """What the job a host would give next costs (its owners' turns decide which)."""
        host = self._hosts[name]
        return host.head_cost(host.turns.choose(host.head_cost))
