"""A log line for each administrative action the API carries out: a kick, a ban, a ban
lifted, a message posted.

They left no trace in the daemon's log (a kick asked by another relay did; found by
review). An API client in a loop could then fill the journal, so the lines are within a
budget: :data:`ADMIN_LOG_BURST` at once, then :data:`ADMIN_LOG_PER_S` a second; the next
line written says how many were not. A message's size is logged, never its content.
"""

import logging

import trio

from mcrelay.logs import LineBudget

log = logging.getLogger(__name__)

ADMIN_LOG_BURST = 50
ADMIN_LOG_PER_S = 1.0


class AdminLog:
    def __init__(self) -> None:
        self._lines = LineBudget(ADMIN_LOG_BURST, ADMIN_LOG_PER_S)

    def action(self, message: str, *args: object) -> None:
        """Log one action done, unless over the budget."""
        held = self._lines.take(trio.current_time())
        if held is None:
            return
        if held:
            message += f" ({held} more admin actions not logged before this one)"
        log.info(message, *args)


def seconds(value: float) -> str:
    """A ban's length as given: ``600``, ``0.5``, ``31536000`` (not ``3.1536e+07``)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")
