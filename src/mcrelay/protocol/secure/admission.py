"""The relay's policy for datagrams that come before a session: which INITs it reads,
which it answers with COOKIE, which it ignores; which KEY_QUERYs it answers.

Sans-I/O and told the time (``now``, monotonic seconds). Every refusal is a value
with a :class:`DropReason`, so the daemon counts it; nothing here raises for what a
peer sent. The order for an INIT:

1. :meth:`HandshakeGate.screen_init` (cheap, in the receive loop): mac1, the load,
   mac2 and the per-IP limit under load;
2. :meth:`.handshake.Responder.read_init_untrusted` (Curve25519: Noise);
3. the daemon's own checks on the client's key (authorized, banned);
4. :meth:`TimestampTable.advance`: the INIT's timestamp must be the greatest yet.
"""

import os
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.cookies import (
    COOKIE_NONCE_BYTES,
    COOKIE_SECRET_BYTES,
    cookie_key,
    encode_cookie_reply,
    mac1_key,
    mac1_of,
    mac1_valid,
    mac2_valid,
    make_cookie,
)
from mcrelay.protocol.secure.handshake import INIT
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keyquery import decode_key_query_untrusted, encode_key_info

COOKIE_SECRET_LIFETIME_S = 120.0
"""A cookie secret is replaced this often; the one before it is still accepted."""
LOAD_WINDOW_S = 1.0
LOAD_INITS = 200
"""Under load when more INITs than this with a valid mac1 arrived over the window..."""
LOAD_WAITING_INITS = 64
"""...or more than this many wait to be processed (as the caller counts them)..."""
LOAD_LINGER_S = 1.0
"""...and for this long after."""
PER_IP_BURST = 5
PER_IP_PER_S = 20.0
MAX_TRACKED_IPS = 65536
"""Source IPs whose bucket is not full again; a new IP past this is refused."""
KEY_QUERIES_PER_S = 100
MAX_MEMBERS = 65536
MAX_UNCONFIRMED_HANDSHAKES = 4096


@dataclass(frozen=True, slots=True)
class Admit:
    """Go on: read the INIT (Noise)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``datagram`` to the source. With a ``reason``, the datagram it answers goes
    no further (count it): an INIT answered with COOKIE."""

    datagram: bytes
    reason: DropReason | None = None


@dataclass(frozen=True, slots=True)
class Silence:
    """Send nothing; count ``reason``."""

    reason: DropReason


class RecentEvents:
    """Events over the trailing second, counted up to ``limit`` + 1 (bounded memory)."""

    __slots__ = ("_times",)

    def __init__(self, limit: int) -> None:
        self._times: deque[float] = deque(maxlen=limit + 1)

    def add(self, now: float) -> None:
        self._times.append(now)

    def count(self, now: float) -> int:
        while self._times and self._times[0] <= now - LOAD_WINDOW_S:
            self._times.popleft()
        return len(self._times)


class CookieSecrets:
    """The secret of the current 120-second period, and the one of the period before.

    Periods count from the first use; a secret is drawn when its period is first
    needed, so a secret's cookies are accepted for at most 240 s after it is drawn.
    """

    __slots__ = ("_current", "_period", "_previous", "_random_bytes", "_start")

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random_bytes = random_bytes
        self._start: float | None = None
        self._period = 0
        self._current = b""
        self._previous: bytes | None = None

    def _turn(self, now: float) -> None:
        if self._start is None:
            self._start = now
            self._current = self._random_bytes(COOKIE_SECRET_BYTES)
            return
        period = int((now - self._start) // COOKIE_SECRET_LIFETIME_S)
        if period > self._period:
            self._previous = self._current if period == self._period + 1 else None
            self._current = self._random_bytes(COOKIE_SECRET_BYTES)
            self._period = period

    def cookie(self, source: Address, now: float) -> bytes:
        self._turn(now)
        return make_cookie(self._current, source)

    def mac2_valid(self, datagram: bytes, source: Address, now: float) -> bool:
        self._turn(now)
        secrets = [self._current] if self._previous is None else [self._current, self._previous]
        return any(mac2_valid(datagram, make_cookie(secret, source)) for secret in secrets)


class SourceIpLimiter:
    """A token bucket per source IP (burst 5, then 20 per second).

    A bucket that has filled again is forgotten; past ``max_ips`` remembered, a new
    IP is refused (as WireGuard's limiter does) rather than an old one forgotten.
    """

    __slots__ = ("_buckets", "_max_ips", "burst", "per_s")

    def __init__(
        self,
        *,
        burst: int = PER_IP_BURST,
        per_s: float = PER_IP_PER_S,
        max_ips: int = MAX_TRACKED_IPS,
    ) -> None:
        if burst < 1 or per_s <= 0:
            raise LocalProtocolError("a rate limit needs a burst of 1 or more and a rate")
        self.burst, self.per_s, self._max_ips = burst, per_s, max_ips
        # ip -> (tokens, when last updated); oldest update first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, ip: str, now: float) -> bool:
        refill_s = self.burst / self.per_s
        while self._buckets:
            oldest = next(iter(self._buckets))
            if now - self._buckets[oldest][1] < refill_s:
                break
            del self._buckets[oldest]
        tokens, updated = self._buckets.pop(ip, (float(self.burst), now))
        if len(self._buckets) >= self._max_ips:
            return False
        tokens = min(float(self.burst), tokens + (now - updated) * self.per_s)
        allowed = tokens >= 1
        self._buckets[ip] = (tokens - 1 if allowed else tokens, now)
        return allowed


class TimestampTable:
    """The greatest INIT timestamp (TAI64N, compared as bytes) per client static key.

    It holds ``member_limit + unconfirmed_cap`` keys; past that, the least recently
    used key that ``held`` says is neither a member's nor a pending handshake's is
    forgotten, so those are never forgotten.
    """

    __slots__ = ("_greatest", "_held", "capacity")

    def __init__(
        self,
        *,
        member_limit: int = MAX_MEMBERS,
        unconfirmed_cap: int = MAX_UNCONFIRMED_HANDSHAKES,
        held: Callable[[bytes], bool] = lambda key: False,
    ) -> None:
        self.capacity = member_limit + unconfirmed_cap
        if self.capacity < 1:
            raise LocalProtocolError("the timestamp table needs room for a key")
        self._held = held
        self._greatest: OrderedDict[bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._greatest)

    def advance(self, key: bytes, timestamp: bytes) -> DropReason | None:
        """Record ``timestamp`` for ``key`` if greater than any before it: ``None``;
        else why the INIT is dropped (``stale_timestamp``, or ``registry_full``
        when every key held is a member's or a pending handshake's)."""
        greatest = self._greatest.get(key)
        if greatest is not None:
            self._greatest.move_to_end(key)
            if timestamp <= greatest:
                return DropReason.STALE_TIMESTAMP
        elif len(self._greatest) >= self.capacity and not self._forget_one():
            return DropReason.REGISTRY_FULL
        self._greatest[key] = timestamp
        return None

    def _forget_one(self) -> bool:
        for _ in range(len(self._greatest)):
            oldest = next(iter(self._greatest))
            if not self._held(oldest):
                del self._greatest[oldest]
                return True
            self._greatest.move_to_end(oldest)
        return False


class HandshakeGate:
    """The relay's screening of INIT and KEY_QUERY under its static public key.

    ``cookies_always`` (``--cookies always``) keeps it under load; it may change
    at any time (a reload).
    """

    __slots__ = (
        "_cookie_key",
        "_key_queries",
        "_load_until",
        "_mac1_key",
        "_random_bytes",
        "_recent_inits",
        "cookies_always",
        "ip_limiter",
        "relay_public",
        "secrets",
    )

    def __init__(
        self,
        relay_public: bytes,
        *,
        cookies_always: bool = False,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.relay_public = relay_public
        self.cookies_always = cookies_always
        self._random_bytes = random_bytes
        self._mac1_key = mac1_key(relay_public)
        self._cookie_key = cookie_key(relay_public)
        self.secrets = CookieSecrets(random_bytes)
        self.ip_limiter = SourceIpLimiter()
        self._recent_inits = RecentEvents(LOAD_INITS)
        self._key_queries = RecentEvents(KEY_QUERIES_PER_S)
        self._load_until = float("-inf")

    def under_load(self, now: float, waiting: int = 0) -> bool:
        """Whether INITs need a valid mac2 now; ``waiting``: INITs not yet processed."""
        if self._recent_inits.count(now) > LOAD_INITS or waiting > LOAD_WAITING_INITS:
            self._load_until = now + LOAD_LINGER_S
        return self.cookies_always or now < self._load_until

    def screen_init(
        self, datagram: bytes, source: Address, now: float, waiting: int
    ) -> Admit | Reply | Silence:
        """Whether to read this INIT (:class:`Admit`), answer it with COOKIE only
        (:class:`Reply`), or ignore it (:class:`Silence`)."""
        try:
            kind = datagram_type_untrusted(datagram)
        except RemoteProtocolError as error:
            return Silence(error.reason)
        if kind is not DatagramType.INIT:
            return Silence(DropReason.MALFORMED)
        if not mac1_valid(datagram, self._mac1_key):
            return Silence(DropReason.BAD_MAC1)
        self._recent_inits.add(now)
        if not self.under_load(now, waiting):
            return Admit()
        if not self.secrets.mac2_valid(datagram, source, now):
            return Reply(self._cookie_reply(datagram, source, now), DropReason.COOKIE_REQUIRED)
        if not self.ip_limiter.allow(source[0], now):
            return Silence(DropReason.RATE_LIMITED)
        return Admit()

    def _cookie_reply(self, init: bytes, source: Address, now: float) -> bytes:
        _, sender_index, _, _, _ = INIT.unpack(init)
        return encode_cookie_reply(
            sender_index,
            self.secrets.cookie(source, now),
            nonce=self._random_bytes(COOKIE_NONCE_BYTES),
            cookie_key=self._cookie_key,
            init_mac1=mac1_of(init),
        )

    def answer_key_query(self, datagram: bytes, now: float) -> Reply | Silence:
        """KEY_INFO for a KEY_QUERY, at most 100 per second in total (no per-IP limit:
        a spoofer could starve a victim of its answers)."""
        try:
            nonce = decode_key_query_untrusted(datagram)
        except RemoteProtocolError as error:
            return Silence(error.reason)
        if self._key_queries.count(now) >= KEY_QUERIES_PER_S:
            return Silence(DropReason.KEY_QUERY_LIMIT)
        self._key_queries.add(now)
        return Reply(encode_key_info(self.relay_public, nonce))
