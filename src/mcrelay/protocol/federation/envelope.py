"""Envelopes: one relay's body, sealed under the cluster key, with a header in clear.

An envelope is a header (version, kind, the sending relay's name, its epoch, a
sequence number) followed by the ChaCha20-Poly1305 ciphertext of the body and its
16-byte tag. The header is the AEAD's associated data: nothing in it changes unseen.

The key is not the cluster key itself but a subkey per (kind, relay, epoch)::

    subkey = BLAKE2s-256(key=cluster_key,
                         data=b"mcrelay federation v1" || kind u8 || name_len u8
                              || name || epoch u64 LE)

and the nonce is 4 zero bytes and the seq (u64 LE). A sender's seq counts up from 1
per kind within one epoch (one run of the relay), so no (subkey, nonce) pair is ever
used twice: two relays never share a subkey (their names differ), nor two runs of
one relay (their epochs differ), nor two kinds (each has its own counter and key).

:class:`Sealer` seals a relay's envelopes; :class:`Opener` opens anyone's, raising
:class:`RemoteProtocolError` only. Whether an envelope is new (not a replay, not of
an older run) is for :mod:`mcrelay.protocol.federation.streams` to say.
"""

import hashlib
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError

ENVELOPE_VERSION = 2
"""2: SNAPSHOT_REQUEST carries a nonce, and SNAPSHOT the nonce it answers and its
relay's last MSG and KICK seqs (version 1 let a relay that had just restarted take a
recorded stream again: found by review)."""
MAX_ENVELOPE_BYTES = 1 << 20
"""The largest envelope, header and tag included: NATS's default ``max_payload``."""
CLUSTER_KEY_BYTES = 32
TAG_BYTES = 16
MAX_U64 = (1 << 64) - 1
MAX_RELAY_NAME_BYTES = 64
RELAY_NAME_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_RELAY_NAME_BYTES}}}")
"""A relay's name, whole (``fullmatch``): also the charset of cluster names."""
SUBKEYS_CACHED = 1024
"""Subkeys an :class:`Opener` keeps: 6 kinds of a few hundred relays' current epochs."""
SUBKEY_CONTEXT = b"mcrelay federation v1"

# +---------+------+----------+--------------+---------+---------+
# | version | kind | name_len | relay name   | epoch   | seq     |
# | u8 = 2  | u8   | u8 1..64 | name_len B   | u64 LE  | u64 LE  |
# +---------+------+----------+--------------+---------+---------+
# then the ciphertext of the body and its 16-byte tag. The header is the AEAD's AAD.
HEADER_HEAD = struct.Struct("<BBB")
HEADER_TAIL = struct.Struct("<QQ")
MIN_HEADER_BYTES = HEADER_HEAD.size + 1 + HEADER_TAIL.size
MIN_ENVELOPE_BYTES = MIN_HEADER_BYTES + TAG_BYTES
# +--------------+---------+
# | 4 zero bytes | seq     |
# |              | u64 LE  |
# +--------------+---------+
NONCE = struct.Struct("<4xQ")
# | context (21 bytes) | kind u8 | name_len u8 | name | epoch u64 LE |: the subkey's data
SUBKEY_KIND = struct.Struct("<BB")
SUBKEY_EPOCH = struct.Struct("<Q")


class Kind(IntEnum):
    MSG = 1
    PRESENCE = 2
    SNAPSHOT = 3
    SNAPSHOT_REQUEST = 4
    KICK = 5
    KICK_REPLY = 6


_KINDS = frozenset(Kind)


def valid_relay_name(text: str) -> bool:
    """Whether ``text`` is a relay name: 1 to 64 of ``[A-Za-z0-9_-]``."""
    return RELAY_NAME_PATTERN.fullmatch(text) is not None


def check_relay_name(name: str) -> str:
    """``name`` if it is a relay name; else :class:`LocalProtocolError`."""
    if not valid_relay_name(name):
        raise LocalProtocolError(f"{name!r} is not a relay name (1 to 64 of A-Z a-z 0-9 _ -)")
    return name


def relay_name_untrusted(raw: bytes) -> str:
    """The relay name in ``raw``; :class:`RemoteProtocolError` (``bad_envelope``) if it is not one."""
    name = raw.decode("ascii", errors="replace")
    if not valid_relay_name(name):
        raise RemoteProtocolError(f"relay name {raw!r} is not one", DropReason.BAD_ENVELOPE)
    return name


@dataclass(frozen=True, slots=True)
class Header:
    """An envelope's header: who sealed it, in which run, its kind and its place."""

    version: int
    kind: Kind
    relay: str
    epoch: int
    seq: int

    def __post_init__(self) -> None:
        if self.version != ENVELOPE_VERSION:
            raise LocalProtocolError(f"envelope version {self.version}, not {ENVELOPE_VERSION}")
        if self.kind not in _KINDS:
            raise LocalProtocolError(f"envelope kind {self.kind} is not one of 1 to 6")
        check_relay_name(self.relay)
        if not 0 < self.epoch <= MAX_U64:
            raise LocalProtocolError(f"epoch {self.epoch} is not a nonzero u64")
        if not 0 < self.seq <= MAX_U64:
            raise LocalProtocolError(f"seq {self.seq} is not a nonzero u64")

    def encode(self) -> bytes:
        name = self.relay.encode("ascii")
        return (
            HEADER_HEAD.pack(self.version, self.kind, len(name))
            + name
            + HEADER_TAIL.pack(self.epoch, self.seq)
        )


def decode_header_untrusted(data: bytes) -> Header:
    """The header at the start of an envelope (not authenticated: that is :class:`Opener`'s).

    Raises :class:`RemoteProtocolError`: ``envelope_version`` for a first byte other
    than :data:`ENVELOPE_VERSION` (nothing else is read), ``bad_envelope`` for a header
    cut short, an unknown kind, a bad relay name, or a zero epoch or seq.
    """
    if not data:
        raise RemoteProtocolError("an empty envelope", DropReason.BAD_ENVELOPE)
    if data[0] != ENVELOPE_VERSION:
        raise RemoteProtocolError(
            f"envelope version {data[0]}, not {ENVELOPE_VERSION}", DropReason.ENVELOPE_VERSION
        )
    if len(data) < MIN_HEADER_BYTES:
        raise RemoteProtocolError(f"envelope of {len(data)} bytes", DropReason.BAD_ENVELOPE)
    version, kind, name_len = HEADER_HEAD.unpack_from(data)
    end = HEADER_HEAD.size + name_len
    if len(data) < end + HEADER_TAIL.size:
        raise RemoteProtocolError(
            f"header cut short ({len(data)} bytes, name of {name_len})", DropReason.BAD_ENVELOPE
        )
    if kind not in _KINDS:
        raise RemoteProtocolError(f"unknown envelope kind {kind}", DropReason.BAD_ENVELOPE)
    relay = relay_name_untrusted(data[HEADER_HEAD.size : end])
    epoch, seq = HEADER_TAIL.unpack_from(data, end)
    if epoch == 0 or seq == 0:
        raise RemoteProtocolError(f"epoch {epoch}, seq {seq}: zero", DropReason.BAD_ENVELOPE)
    return Header(version, Kind(kind), relay, epoch, seq)


def derive_subkey(cluster_key: bytes, kind: Kind, relay: str, epoch: int) -> bytes:
    """The 32-byte key of envelopes of ``kind`` from ``relay`` in its run ``epoch``."""
    name = relay.encode("ascii")
    data = SUBKEY_CONTEXT + SUBKEY_KIND.pack(kind, len(name)) + name + SUBKEY_EPOCH.pack(epoch)
    return hashlib.blake2s(data, digest_size=32, key=cluster_key).digest()


def _check_cluster_key(cluster_key: bytes) -> None:
    if len(cluster_key) != CLUSTER_KEY_BYTES:
        raise LocalProtocolError(
            f"a cluster key of {len(cluster_key)} bytes, not {CLUSTER_KEY_BYTES}"
        )


def _seal(aead: ChaCha20Poly1305, header: Header, body: bytes) -> bytes:
    aad = header.encode()
    return aad + aead.encrypt(NONCE.pack(header.seq), body, aad)


def seal_envelope(cluster_key: bytes, header: Header, body: bytes) -> bytes:
    """The envelope of ``header`` and ``body``, at any seq: for vectors and tests. A
    relay seals with a :class:`Sealer`, which never uses a seq twice."""
    _check_cluster_key(cluster_key)
    subkey = derive_subkey(cluster_key, header.kind, header.relay, header.epoch)
    return _seal(ChaCha20Poly1305(subkey), header, body)


class Sealer:
    """Seals one relay's envelopes in one run (``epoch``): a seq counter per kind.

    ``epoch`` is the relay's start time in ns since the Unix epoch (nonzero), so that
    a restarted relay's envelopes are newer than its last run's.
    """

    __slots__ = ("_aeads", "_epoch", "_relay", "_seqs")

    def __init__(self, cluster_key: bytes, relay: str, epoch: int) -> None:
        _check_cluster_key(cluster_key)
        check_relay_name(relay)
        if not 0 < epoch <= MAX_U64:
            raise LocalProtocolError(f"epoch {epoch} is not a nonzero u64")
        self._relay = relay
        self._epoch = epoch
        self._aeads = {
            kind: ChaCha20Poly1305(derive_subkey(cluster_key, kind, relay, epoch)) for kind in Kind
        }
        self._seqs = dict.fromkeys(Kind, 0)

    @property
    def relay(self) -> str:
        return self._relay

    @property
    def epoch(self) -> int:
        return self._epoch

    def last_seq(self, kind: Kind) -> int:
        """The seq of the last envelope of ``kind`` sealed (0 before the first): for
        PRESENCE, the presence version a SNAPSHOT names."""
        return self._seqs[kind]

    def seal(self, kind: Kind, body: bytes) -> bytes:
        """The next envelope of ``kind`` carrying ``body``."""
        return self.seal_with_header(kind, body)[1]

    def seal_with_header(self, kind: Kind, body: bytes) -> tuple[Header, bytes]:
        """The next envelope of ``kind`` carrying ``body``, and its header (whose
        epoch and seq a KICK_REPLY echoes).

        Raises :class:`LocalProtocolError` for an envelope over 1 MiB (the seq is
        not spent), or a kind whose seq is spent (2^64 - 1 envelopes).
        """
        size = MIN_ENVELOPE_BYTES - 1 + len(self._relay) + len(body)
        if size > MAX_ENVELOPE_BYTES:
            raise LocalProtocolError(f"an envelope of {size} bytes, over {MAX_ENVELOPE_BYTES}")
        seq = self._seqs[kind] + 1
        header = Header(ENVELOPE_VERSION, kind, self._relay, self._epoch, seq)
        self._seqs[kind] = seq
        return header, _seal(self._aeads[kind], header, body)


class Opener:
    """Opens envelopes sealed under the cluster key, whoever sealed them.

    Subkeys are derived on first use and kept, at most ``max_subkeys`` (the least
    recently used goes first): a header naming a new relay or epoch costs a BLAKE2s.
    """

    __slots__ = ("_aeads", "_cluster_key", "_max_subkeys")

    def __init__(self, cluster_key: bytes, max_subkeys: int = SUBKEYS_CACHED) -> None:
        _check_cluster_key(cluster_key)
        if max_subkeys < 1:
            raise LocalProtocolError(f"max_subkeys {max_subkeys} is not positive")
        self._cluster_key = cluster_key
        self._max_subkeys = max_subkeys
        self._aeads: OrderedDict[tuple[Kind, str, int], ChaCha20Poly1305] = OrderedDict()

    def subkeys_cached(self) -> int:
        return len(self._aeads)

    def open_untrusted(self, data: bytes) -> tuple[Header, bytes]:
        """The authenticated header and body of an envelope.

        Raises :class:`RemoteProtocolError`: ``envelope_too_large`` over 1 MiB,
        ``envelope_version`` for another version, ``bad_envelope`` for a
        malformed header or one with no room for the tag, ``envelope_auth`` when the
        AEAD refuses it (another cluster's key, or tampered with). Whether it is
        new is not checked here (:mod:`.streams` does).
        """
        if len(data) > MAX_ENVELOPE_BYTES:
            raise RemoteProtocolError(
                f"an envelope of {len(data)} bytes, over {MAX_ENVELOPE_BYTES}",
                DropReason.ENVELOPE_TOO_LARGE,
            )
        header = decode_header_untrusted(data)
        split = HEADER_HEAD.size + len(header.relay) + HEADER_TAIL.size
        if len(data) - split < TAG_BYTES:
            raise RemoteProtocolError(
                f"an envelope of {len(data)} bytes has no room for its tag",
                DropReason.BAD_ENVELOPE,
            )
        try:
            body: bytes = self._aead(header).decrypt(
                NONCE.pack(header.seq), data[split:], data[:split]
            )
        except InvalidTag:
            raise RemoteProtocolError(
                f"{header.kind.name} {header.seq} from {header.relay} fails authentication",
                DropReason.ENVELOPE_AUTH,
            ) from None
        return header, body

    def _aead(self, header: Header) -> ChaCha20Poly1305:
        key = (header.kind, header.relay, header.epoch)
        aead = self._aeads.get(key)
        if aead is not None:
            self._aeads.move_to_end(key)
            return aead
        aead = ChaCha20Poly1305(derive_subkey(self._cluster_key, *key))
        self._aeads[key] = aead
        if len(self._aeads) > self._max_subkeys:
            self._aeads.popitem(last=False)
        return aead
