"""A client before its session: the KEY_QUERY that learns or checks the relay's key,
and the INITs of one handshake (the first, a rekey, or a new one after the relay
fell silent), their retries and cookies, until a RESPONSE.

The KEY_QUERY is resent on the INITs' schedule until an answer comes; it is the same
query every time, so that two answers with different keys are seen as such.

Every INIT is fresh (a new ephemeral key, index and timestamp); they go out on the
page's schedule (:class:`.retries.HandshakeRetries`), and one COOKIE per scheduled
INIT makes a fresh INIT carry mac2 at once. Only the latest INIT is answered: a
RESPONSE or COOKIE for an earlier one is ``unknown_index``.
"""

import os
from collections.abc import Callable, Container
from dataclasses import dataclass

from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.secure.handshake import Established, Initiator, fresh_index
from mcrelay.protocol.secure.keyquery import (
    QUERY_NONCE_BYTES,
    KeyQuery,
    decode_key_info_untrusted,
)
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.noise import DH_BYTES, dh
from mcrelay.protocol.secure.retries import (
    GIVE_UP_AFTER_S,
    HandshakeRetries,
    HeldCookie,
    RetryAction,
)

_PROBE = bytes(range(DH_BYTES))
"""Any private key: X25519 clamps it to a multiple of 8, which a point of low order
always turns into zero."""


def low_order(public: bytes) -> bool:
    """Whether ``public`` is a Curve25519 point of low order: no handshake with it can
    succeed, since nobody holds its private key."""
    return dh(_PROBE, public) is None


@dataclass(frozen=True, slots=True)
class Answered:
    """A RESPONSE to our latest INIT: the keys, the relay's epoch, and the round trip."""

    established: Established
    round_trip_s: float


class HandshakeAttempt:
    """The INITs of one handshake under ``relay_key``, from the first to a RESPONSE."""

    __slots__ = (
        "_cookie",
        "_epoch",
        "_identity",
        "_in_use",
        "_initiator",
        "_random_bytes",
        "_relay_key",
        "_sent_at",
        "_timestamp",
        "retries",
    )

    def __init__(
        self,
        identity: KeyPair,
        relay_key: bytes,
        epoch: int,
        now: float,
        *,
        cookie: HeldCookie,
        timestamp: Callable[[float], bytes],
        in_use: Container[int],
        random_bytes: Callable[[int], bytes] = os.urandom,
        give_up_after_s: float = GIVE_UP_AFTER_S,
    ) -> None:
        """``timestamp``: the TAI64N of a monotonic time; ``in_use``: the indexes of the
        keypairs we hold (a fresh INIT's index is none of them)."""
        self._identity = identity
        self._relay_key = relay_key
        self._epoch = epoch
        self._cookie = cookie
        self._timestamp = timestamp
        self._in_use = in_use
        self._random_bytes = random_bytes
        self.retries = HandshakeRetries(now, random_bytes, give_up_after_s=give_up_after_s)
        self._initiator = self._fresh(now)
        self._sent_at = now

    def _fresh(self, now: float) -> Initiator:
        self._sent_at = now
        return Initiator(
            self._identity,
            self._relay_key,
            ephemeral_private=self._random_bytes(DH_BYTES),
            sender_index=fresh_index(self._in_use, self._random_bytes),
            timestamp=self._timestamp(now),
            epoch=self._epoch,
            cookie=self._cookie.current(now),
        )

    @property
    def init(self) -> bytes:
        """The latest INIT (sent when made)."""
        return self._initiator.datagram

    @property
    def sender_index(self) -> int:
        return self._initiator.sender_index

    @property
    def deadline(self) -> float:
        return self.retries.deadline

    def poll(self, now: float) -> RetryAction:
        """SEND_INIT: a fresh :attr:`init` is to be sent now; GIVE_UP: 90 s passed."""
        action = self.retries.poll(now)
        if action is RetryAction.SEND_INIT:
            self._initiator = self._fresh(now)
        return action

    def read_cookie_untrusted(self, datagram: bytes, now: float) -> bytes | None:
        """Hold the cookie a COOKIE for our latest INIT carries; the fresh INIT with mac2 to
        send now, or None (one per scheduled INIT). Raises ``RemoteProtocolError``."""
        self._cookie.hold(self._initiator.read_cookie_untrusted(datagram), now)
        if not self.retries.cookie_arrived():
            return None
        self._initiator = self._fresh(now)
        return self._initiator.datagram

    def read_response_untrusted(self, datagram: bytes, now: float) -> Answered:
        """The session's keys from a RESPONSE to our latest INIT. Raises
        ``RemoteProtocolError``, leaving the attempt as it was."""
        established = self._initiator.read_response_untrusted(datagram)
        return Answered(established, now - self._sent_at)


@dataclass(frozen=True, slots=True)
class KeyMismatch:
    """An answer's key is not the one expected (pinned, known, or the first answer's)."""

    expected: bytes
    found: bytes
    disagreed: bool = False
    """No key was expected: ``expected`` is the first answer's, and two answers differ."""


class KeyCheck:
    """One KEY_QUERY, resent until answered, and what its answers say of the relay key."""

    __slots__ = ("_given", "key", "query", "retries")

    def __init__(
        self,
        expected: bytes | None,
        now: float,
        random_bytes: Callable[[int], bytes] = os.urandom,
        *,
        give_up_after_s: float = GIVE_UP_AFTER_S,
    ) -> None:
        self.query = KeyQuery(random_bytes(QUERY_NONCE_BYTES))
        self.retries = HandshakeRetries(now, random_bytes, give_up_after_s=give_up_after_s)
        self.key = expected
        """The key expected, else the first answer's."""
        self._given = expected is not None

    @property
    def answered(self) -> bool:
        return self.query.key is not None or self.query.conflict

    def due(self, now: float) -> bool:
        """Whether to send the query (again) now."""
        return not self.answered and self.retries.poll(now) is RetryAction.SEND_INIT

    def read_answer_untrusted(self, datagram: bytes) -> KeyMismatch | None:
        """Take a KEY_INFO; a mismatch means refuse. Raises ``RemoteProtocolError``."""
        if low_order(decode_key_info_untrusted(datagram, self.query.nonce)):
            raise RemoteProtocolError(
                "KEY_INFO with a key of low order", DropReason.HANDSHAKE_FAILED
            )
        found = self.query.read_answer_untrusted(datagram)
        if self.key is None:
            self.key = found
        elif found != self.key:
            return KeyMismatch(self.key, found, disagreed=not self._given)
        return None
