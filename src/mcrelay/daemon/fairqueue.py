"""Jobs of many owners, taken in turn: deficit round robin, weighted by each job's cost.

The crypto workers took jobs from one FIFO queue, so one member's backlog (up to its
128 messages in flight, each of them as costly as the largest fan-out) held every
other member's message behind it for seconds. Here each owner (a message's sender)
has a line of its own, and the lines take turns: at its turn an owner is given
``quantum`` more credit and its jobs are taken while their cost is within its credit;
what is left over waits for its next turn (a job dearer than a quantum waits a few
turns), and an owner whose line empties loses its credit (none is saved up while
idle). So an owner that has a job waiting gets it taken within a round of the others'
turns, each worth at most a quantum plus one job, however much they have queued;
and an owner's jobs are taken in the order it gave them.

Plain data, no I/O, no clock: :class:`~mcrelay.daemon.workers.CryptoWorkers` pushes
and pops on the Trio thread.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class _Line(Generic[T]):
    jobs: deque[tuple[T, int]] = field(default_factory=deque)
    """The owner's jobs and their costs, in the order they came."""
    credit: int = 0


class FairQueue(Generic[T]):
    """Jobs by owner, popped a round of owners at a time (see the module's docstring)."""

    def __init__(self, quantum: int) -> None:
        if quantum < 1:
            raise ValueError(f"a quantum is at least 1, not {quantum}")
        self._quantum = quantum
        self._lines: dict[str, _Line[T]] = {}
        self._turns: deque[str] = deque()
        """The owners with jobs, the one whose turn it is first."""
        self._in_turn = False
        """The first owner of :attr:`_turns` was given its quantum for this turn."""
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def owners(self) -> int:
        """Owners with jobs waiting."""
        return len(self._turns)

    def push(self, owner: str, job: T, cost: int) -> None:
        """Queue ``job`` at the end of ``owner``'s line; an owner that had none takes its
        turn after those who have."""
        if cost < 1:
            raise ValueError(f"a job's cost is at least 1, not {cost}")
        line = self._lines.get(owner)
        if line is None:
            line = self._lines[owner] = _Line()
            self._turns.append(owner)
        line.jobs.append((job, cost))
        self._size += 1

    def pop(self) -> T:
        """The next job, by turns (IndexError when none waits)."""
        if not self._size:
            raise IndexError("pop from an empty FairQueue")
        while True:
            owner = self._turns[0]
            line = self._lines[owner]
            if not self._in_turn:
                line.credit += self._quantum
                self._in_turn = True
            job, cost = line.jobs[0]
            if cost <= line.credit:
                line.credit -= cost
                line.jobs.popleft()
                self._size -= 1
                if not line.jobs:
                    del self._lines[owner]
                    self._turns.popleft()
                    self._in_turn = False
                return job
            self._turns.rotate(-1)
            self._in_turn = False
