"""Path validation, the relay's side of roaming (secure-wire.md, DATA: Roaming).

An authenticated DATA from a new address, with a counter above the highest seen,
makes that address the candidate: the relay challenges it (PATH_CHALLENGE, 8 random
bytes) and keeps using the validated address until PATH_RESPONSE with the same bytes
comes back from the candidate. Until then the candidate gets no more than
:data:`AMPLIFICATION_FACTOR` times the bytes received from it, and a challenge at
most every :data:`CHALLENGE_INTERVAL_S`. One candidate at a time: a newer one takes
the place of the last.
"""

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.frames import FRAME_HEADER, PATH_DATA_BYTES
from mcrelay.protocol.secure.header import MIN_DATA_BYTES

CHALLENGE_INTERVAL_S = 0.2
AMPLIFICATION_FACTOR = 3
CHALLENGE_BYTES = MIN_DATA_BYTES + FRAME_HEADER.size + PATH_DATA_BYTES
"""A DATA holding one PATH_CHALLENGE and nothing else (43 bytes)."""


@dataclass(slots=True)
class _Candidate:
    address: Address
    challenge: bytes
    bytes_in: int
    bytes_out: int = 0
    last_challenge: float = float("-inf")


class PathValidator:
    def __init__(self, address: Address, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        """``address``: the validated one (an INIT's source, once its handshake is
        confirmed)."""
        self.address = address
        self._candidate: _Candidate | None = None
        self._random_bytes = random_bytes

    @property
    def candidate(self) -> Address | None:
        return None if self._candidate is None else self._candidate.address

    def seen(self, source: Address, size: int, new_highest: bool) -> None:
        """An authenticated DATA of ``size`` bytes came from ``source``."""
        if source == self.address:
            return
        candidate = self._candidate
        if candidate is not None and candidate.address == source:
            candidate.bytes_in += size
        elif new_highest:
            challenge = self._random_bytes(PATH_DATA_BYTES)
            self._candidate = _Candidate(source, challenge, bytes_in=size)

    def responded(self, source: Address, data: bytes) -> Address | None:
        """A PATH_RESPONSE from ``source``: the address it replaces when it validates the
        candidate (the member moved there), else None."""
        candidate = self._candidate
        if (
            candidate is None
            or candidate.address != source
            or not hmac.compare_digest(data, candidate.challenge)
        ):
            return None
        old, self.address, self._candidate = self.address, candidate.address, None
        return old

    def confirmed(self, source: Address) -> Address | None:
        """A rekey's handshake from ``source`` is confirmed from there: validated as an
        INIT's source is. The address it replaces, if it changed."""
        if source == self.address:
            return None
        if self._candidate is not None and self._candidate.address == source:
            self._candidate = None
        old, self.address = self.address, source
        return old

    def challenge_due(self, now: float) -> tuple[Address, bytes] | None:
        """Where to send a challenge now (in a DATA of its own), and its bytes; None when
        no candidate waits, the last challenge is too recent, or the limit is reached."""
        candidate = self._candidate
        if (
            candidate is None
            or now < candidate.last_challenge + CHALLENGE_INTERVAL_S
            or not self._within_limit(candidate)
        ):
            return None
        candidate.last_challenge = now
        candidate.bytes_out += CHALLENGE_BYTES
        return candidate.address, candidate.challenge

    def next_deadline(self) -> float | None:
        """When a challenge may go again (None without a candidate, or while the limit
        holds it back: only more bytes from the candidate can lift it)."""
        candidate = self._candidate
        if candidate is None or not self._within_limit(candidate):
            return None
        return candidate.last_challenge + CHALLENGE_INTERVAL_S

    @staticmethod
    def _within_limit(candidate: _Candidate) -> bool:
        return candidate.bytes_out + CHALLENGE_BYTES <= AMPLIFICATION_FACTOR * candidate.bytes_in
