"""What the secure reassembly budget costs per fragment once it is full, by holders.

    .venv/bin/python bench/budget_cost.py     # about 10 s

The relay's secure channels share one budget of reassembly bytes (16 MiB). Once it
is full, each fragment of a new message makes room by evicting the oldest partial
message of the peer holding the most bytes. Here N holders (stand-ins for the
channels: a list of partial messages each) fill the budget with messages of one
fragment's charge, then FRAGMENTS more charges come, round robin, each evicting one
message. Reported: the median of ROUNDS of the CPU per charge, in microseconds, and
beside it the same charges into a budget with room (no eviction: the baseline).
"""

import statistics
import time
from collections import deque

from mcrelay.protocol.secure.budget import MAX_TOTAL_BYTES, ReceiveBudget

CHARGE = 1200
"""About what the first fragment of a message costs (1,150 bytes and overheads)."""
HOLDERS = (10, 100, 1000, 4096)
FRAGMENTS = 20_000
ROUNDS = 5


class Holder:
    def __init__(self, budget: ReceiveBudget) -> None:
        self.budget = budget
        self.partial: deque[int] = deque()
        self.next_seq = 0

    def start(self) -> bool:
        seq = self.next_seq
        if not self.budget.reserve(self, CHARGE, seq):
            return False
        self.partial.append(seq)
        self.next_seq += 1
        return True

    def evict_oldest_partial(self, keep: int | None) -> bool:
        if not self.partial or self.partial[0] == keep:
            return False
        self.partial.popleft()
        self.budget.release(self, CHARGE)
        return True


def per_charge_us(holders: int, *, full: bool) -> float:
    budget = ReceiveBudget(MAX_TOTAL_BYTES if full else 2**62)
    members = [Holder(budget) for _ in range(holders)]
    while budget.total + CHARGE <= MAX_TOTAL_BYTES:
        for member in members:
            member.start()
    start = time.process_time()
    for n in range(FRAGMENTS):
        if not members[n % holders].start():
            raise AssertionError("a charge was refused")
    return (time.process_time() - start) * 1e6 / FRAGMENTS


def main() -> None:
    print(f"median of {ROUNDS} rounds of {FRAGMENTS} charges; us of CPU per charge")
    print("| holders | budget full (evicting) | room (baseline) | evicting - baseline |")
    print("|---:|---:|---:|---:|")
    for holders in HOLDERS:
        full = statistics.median(per_charge_us(holders, full=True) for _ in range(ROUNDS))
        room = statistics.median(per_charge_us(holders, full=False) for _ in range(ROUNDS))
        print(f"| {holders} | {full:.2f} | {room:.2f} | {full - room:.2f} |", flush=True)


if __name__ == "__main__":
    main()
