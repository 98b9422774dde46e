"""sd_notify, natively: READY, STATUS, WATCHDOG, RELOADING and STOPPING to systemd.

Nothing is sent when ``NOTIFY_SOCKET`` is unset. Sending never blocks: the
socket is non-blocking, and a datagram systemd cannot take is lost and logged, once a
minute at most (an unreachable socket was a warning at every watchdog ping, without
end: found by review).
"""

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from mcrelay.logs import once_a_minute

log = logging.getLogger(__name__)


class Notifier:
    def __init__(
        self, environ: Mapping[str, str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # '@name' is a socket in the abstract namespace: a leading NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        self.watchdog_s = _watchdog_s(environ)
        self._clock = clock
        self._failure_lines = once_a_minute()

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *assignments: str) -> None:
        """Send ``NAME=value`` lines as one datagram."""
        if not self._address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            said = " ".join(assignments)
            held_said = "{held} more not sent before this one"
            message = "cannot notify systemd (%s): %s"
            self._failure_lines.log(
                log, logging.WARNING, self._clock(), held_said, message, said, exc
            )

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def _watchdog_s(environ: Mapping[str, str]) -> float | None:
    """The watchdog timeout systemd set for us, in seconds, or None."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    # isdigit() alone takes '²' (which int() refuses) and other scripts' digits.
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    if pid and (not (pid.isascii() and pid.isdigit()) or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000
