"""A log line for each administrative action the API carries out: a kick, a ban, a ban
lifted, a message posted.

They left no trace in the daemon's log (a kick asked by another relay did; found by
review). Kicks, bans and lifts are each logged, always: they decide who may be in the
room, and a budget shared with posts let fifty cheap posts hide the ban after them
(found by review); there are no more of them than an administrator asks for. Posts,
which every member sees anyway, are within a budget, so that an API client posting in
a loop cannot fill the journal: :data:`POST_LOG_BURST` at once, then
:data:`POST_LOG_PER_S` a second; the next post's line says how many were not. A
message's size is logged, never its content.
"""

import logging

import trio

from mcrelay.logs import LineBudget

log = logging.getLogger(__name__)

POST_LOG_BURST = 50
POST_LOG_PER_S = 1.0


class AdminLog:
    def __init__(self) -> None:
        self._posts = LineBudget(POST_LOG_BURST, POST_LOG_PER_S)

    def action(self, message: str, *args: object) -> None:
        """Log a kick, a ban or a lift."""
        log.info(message, *args)

    def post(self, message: str, *args: object) -> None:
        """Log a message posted, unless over the budget."""
        held_said = "{held} more posts not logged before this one"
        self._posts.log(log, logging.INFO, trio.current_time(), held_said, message, *args)
