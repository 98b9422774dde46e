"""The retransmission timeout of RFC 6298, with the secure profile's bounds.

One estimator per peer. The handshake's round trip, when the caller knows it, is the
first sample (RFC 6298 2.2); without it the timeout is 1 s (2.1) until the first
message is acknowledged. Samples come only from fragments sent once (Karn's rule,
applied by the sender); a timeout doubles the value (5.5) up to the cap, and the
doubling holds until the next valid sample.
"""

GRANULARITY_S = 0.005
"""G of RFC 6298: the clock granularity term."""
MIN_RTO_S = 0.050
"""The floor (RFC 6298's 1 s would stall a LAN)."""
MAX_RTO_S = 2.0
INITIAL_RTO_S = 1.0
"""The timeout before any sample (RFC 6298 2.1)."""
_MAX_BACKOFF = 8
"""Doublings kept: 2^8 times the floor is already past the cap."""


class RttEstimator:
    """SRTT, RTTVAR and the backed-off RTO of one peer."""

    def __init__(self, first_sample_s: float | None = None) -> None:
        self.srtt_s: float | None = None
        self.rttvar_s = 0.0
        self.latest_s: float | None = None
        self._backoff = 0
        # Both timeouts are kept as they change: every fragment sent reads them.
        self._base_rto_s = INITIAL_RTO_S
        self._rto_s = INITIAL_RTO_S
        if first_sample_s is not None:
            self.sample(first_sample_s)

    @property
    def rto_s(self) -> float:
        """The timeout in force: the base doubled once per timeout, capped."""
        return self._rto_s

    @property
    def backoff(self) -> int:
        """Timeouts since the last valid sample; each one doubles :attr:`rto_s`."""
        return self._backoff

    @backoff.setter
    def backoff(self, backoff: int) -> None:
        self._backoff = backoff
        self._rto_s = min(self._base_rto_s * (1 << backoff), MAX_RTO_S)

    def sample(self, rtt_s: float) -> None:
        """Take one round-trip measurement (of a fragment sent exactly once)."""
        rtt_s = max(rtt_s, 0.0)
        self.latest_s = rtt_s
        if self.srtt_s is None:
            self.srtt_s = rtt_s
            self.rttvar_s = rtt_s / 2
        else:
            self.rttvar_s = 0.75 * self.rttvar_s + 0.25 * abs(self.srtt_s - rtt_s)
            self.srtt_s = 0.875 * self.srtt_s + 0.125 * rtt_s
        rto = self.srtt_s + max(GRANULARITY_S, 4 * self.rttvar_s)
        self._base_rto_s = min(max(rto, MIN_RTO_S), MAX_RTO_S)
        self.backoff = 0

    def back_off(self) -> None:
        """A retransmission timer expired: double the timeout (RFC 6298 5.5)."""
        self.backoff = min(self._backoff + 1, _MAX_BACKOFF)
