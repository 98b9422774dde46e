"""The client's side of admission: when it sends a fresh INIT, when it gives up, and
the cookie it holds for mac2. Sans-I/O and told the time (monotonic seconds)."""

import os
from collections.abc import Callable
from enum import Enum

from mcrelay.protocol.errors import LocalProtocolError
from mcrelay.protocol.secure.cookies import COOKIE_BYTES

FIRST_RETRIES_AFTER_S = (1.0, 2.0, 4.0)
RETRY_EVERY_S = 5.0
"""After the first retries, a fresh INIT this often."""
MAX_JITTER_MS = 334
GIVE_UP_AFTER_S = 90.0
"""From the first INIT."""
COOKIE_LIFETIME_S = 120.0
"""A cookie makes mac2 while it is younger than this."""


class RetryAction(Enum):
    WAIT = "wait"
    SEND_INIT = "send_init"
    GIVE_UP = "give_up"


class HandshakeRetries:
    """The schedule of a client that gets no RESPONSE: a fresh INIT 1, 2 and 4 s after
    the one before, then every 5 s, each + 0 to 334 ms of jitter; give up 90 s after
    the first INIT.

    Call :meth:`poll` at :attr:`deadline` (or at any time); every retry is a fresh INIT.
    """

    __slots__ = (
        "_cookie_answered",
        "_next_at",
        "_random_bytes",
        "_retries",
        "give_up_at",
        "started",
    )

    def __init__(
        self,
        now: float,
        random_bytes: Callable[[int], bytes] = os.urandom,
        *,
        give_up_after_s: float = GIVE_UP_AFTER_S,
    ) -> None:
        """``now``: when the first INIT was sent; ``give_up_after_s``: the page's 90 s, or
        a client's own connect timeout before its first session."""
        self.started = now
        self.give_up_at = now + give_up_after_s
        self._random_bytes = random_bytes
        self._retries = 0
        self._next_at = now + self._interval()
        self._cookie_answered = False

    def _interval(self) -> float:
        base = (
            FIRST_RETRIES_AFTER_S[self._retries]
            if self._retries < len(FIRST_RETRIES_AFTER_S)
            else RETRY_EVERY_S
        )
        jitter_ms = int.from_bytes(self._random_bytes(2), "little") % (MAX_JITTER_MS + 1)
        return base + jitter_ms / 1000

    @property
    def deadline(self) -> float:
        """When :meth:`poll` has something to do next."""
        return min(self._next_at, self.give_up_at)

    def poll(self, now: float) -> RetryAction:
        if now >= self.give_up_at:
            return RetryAction.GIVE_UP
        if now < self._next_at:
            return RetryAction.WAIT
        self._retries += 1
        self._next_at = now + self._interval()
        self._cookie_answered = False
        return RetryAction.SEND_INIT

    def cookie_arrived(self) -> bool:
        """A COOKIE answered our latest INIT: whether to send a fresh INIT with mac2 now.

        Once per scheduled INIT: an INIT sent for a COOKIE is not resent for the next
        COOKIE (who can forge a COOKIE for an INIT it saw could otherwise keep us
        sending INITs as fast as it answers); the schedule goes on unchanged.
        """
        if self._cookie_answered:
            return False
        self._cookie_answered = True
        return True


class HeldCookie:
    """The latest cookie from the relay, usable for mac2 for 120 s after it arrived."""

    __slots__ = ("_cookie", "_received_at")

    def __init__(self) -> None:
        self._cookie: bytes | None = None
        self._received_at = 0.0

    def hold(self, cookie: bytes, now: float) -> None:
        if len(cookie) != COOKIE_BYTES:
            raise LocalProtocolError(f"a cookie has 16 bytes, not {len(cookie)}")
        self._cookie, self._received_at = cookie, now

    def current(self, now: float) -> bytes | None:
        """The cookie for mac2, or ``None`` (mac2 zeros) when none is younger than 120 s."""
        if self._cookie is not None and now - self._received_at < COOKIE_LIFETIME_S:
            return self._cookie
        return None
