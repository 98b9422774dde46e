"""Timer-based pacing at a precise rate, with bounded catch-up."""

import math
import time
from dataclasses import dataclass, field


@dataclass
class Pacer:
    """Say how many items are due now; late by more than ``catch_up``, skip the rest.

    Item ``i`` is due at ``started + i / rate_per_s``. A sender that fell behind
    (a slow step, the scheduler) sends at most ``catch_up`` items at once and
    counts the others as skipped, so its rate never overshoots for long, and the
    offered rate it reports is what it really sent. With ``tick_s``, it wakes at
    most once per ``tick_s`` and then sends every item due."""

    rate_per_s: float
    total: int
    catch_up: int
    time_limit_s: float
    tick_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    woke: float = field(default=-math.inf, init=False)
    """When :meth:`next_batch` last woke."""
    done: int = 0
    """Items sent or skipped."""
    skipped: int = 0

    def __post_init__(self) -> None:
        if self.tick_s * self.rate_per_s > self.catch_up:
            raise ValueError("a tick holds more items than catch_up: every wake would skip")

    def wake_at(self) -> float:
        """When the next item is due, or the next tick if that is later."""
        return max(self.started + self.done / self.rate_per_s, self.woke + self.tick_s)

    def next_batch(self) -> int:
        """Sleep until :meth:`wake_at`; return how many to send now (0: finished)."""
        if self.done >= self.total:
            return 0
        wait = self.wake_at() - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = self.woke = time.monotonic()
        if now - self.started > self.time_limit_s:
            return 0
        due = min(self.total, int((now - self.started) * self.rate_per_s) + 1)
        behind = max(1, due - self.done)
        if behind > self.catch_up:
            self.skipped += behind - self.catch_up
            self.done += behind - self.catch_up
            behind = self.catch_up
        self.done += behind
        return behind

    @property
    def sent(self) -> int:
        return self.done - self.skipped
