"""The relay's RSA work, as jobs the crypto workers run (in processes of their own).

A message is opened (its blocks decrypted with the relay key) and sealed (encrypted
for each recipient). For a few recipients both happen in one job, so a message costs
one hand-off; a larger fan-out is sealed in jobs of a few recipients each, fewer the
longer the message and the larger the recipients' keys (:data:`SEAL_JOB_COST`).

A job is plain data (it crosses a pipe): a recipient's key travels as its DER bytes,
their SHA-256 and its size, and the worker keeps the keys it loaded in a
:class:`KeyStore`. Its ``cost`` (in chunks encrypted for a 2048-bit recipient) weighs
it in the workers' turns between senders.
"""

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.core.opened import Opened, Sealed
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.tlv import TLV_HEADER

SEAL_INLINE_MAX = 16
"""Recipients sealed in the job that decrypts; more are sealed in jobs of this many.
(At 8, a message to 11 recipients cost two more jobs, and its task two more wakes: the
sweep's S=4 R=8 peak was 12 % lower; at 16 a job of the largest 100-byte fan-out it
takes whole is still about 1 ms.)"""

SEAL_JOB_COST = 1024
"""The most one job seals (see :func:`seal_batches`), in chunks encrypted for a 2048-bit
recipient: about 22 ms. A worker's job is not interrupted for another member's, so a
48 KB message is sealed 4 2048-bit recipients a job (16 a job took 90 ms); a message up
to 12 KB, 16 a job as before (4 when their keys are of 4096 bits)."""
CHUNK_COST_EXPONENT = 1.7
"""A chunk encrypted for a key of ``bits`` costs ``(bits / 2048) ** 1.7`` of one for a
2048-bit key (x1.99 at 3072 bits, x3.25 at 4096). Measured once (a scratch script, the
median of 15 runs of 50 chunks each, on a shared 2-core box): 21-24 us at 2048 bits,
41-43 us at 3072 (x1.7 to x2.0), 67-89 us at 4096 (x3.1 to x3.7). Counted as 2048-bit
chunks, a 12 KB message for 4 recipients of 4096 bits was estimated 6 ms and took 18
(review 15)."""
DECRYPT_COST = 12
"""A block decrypted with the relay key costs about as much as this many chunks
encrypted for a recipient (2048 bits: 250 us against 22 us)."""
RELAY_BLOCK_TLV_BYTES = crypto.KEY_BITS // 8 + TLV_HEADER.size
"""An encrypted block of a client's payload, as the relay's key of the default size
makes it (the cost of a larger key's blocks is underestimated: it is an estimate)."""

KEYS_KEPT = 16_384
"""Recipients' keys a worker keeps loaded (the least recently used go first); loading
one again from its DER costs about 20 us."""

CONTROL_WORDS = {legacy.CONNECT_WORD: "refresh", legacy.DISCONNECT_WORD: "disconnect"}
"""The seed client's in-band words: a message of exactly one of these is not chat."""


class Recipient(NamedTuple):
    """A recipient's key as a job carries it."""

    digest: bytes
    """Its DER's SHA-256 (the member's ``origin_id``): how a worker finds it loaded."""
    der: bytes
    """Its SubjectPublicKeyInfo (the member's identity's ``key``)."""
    bits: int
    """Its modulus's size: what sealing for it costs (:func:`chunk_cost`)."""


class KeyStore:
    """What a worker holds: the relay key, and the recipients' keys it loaded."""

    def __init__(self, relay_key: rsa.RSAPrivateKey) -> None:
        self.relay_key = relay_key
        self._public: OrderedDict[bytes, rsa.RSAPublicKey] = OrderedDict()

    @classmethod
    def from_der(cls, relay_key_der: bytes) -> "KeyStore":
        """In a worker, from :func:`relay_key_der`: the relay checked the key when it read
        its key file, and checking it again here would cost each worker's start 27 ms."""
        key = serialization.load_der_private_key(
            relay_key_der, password=None, unsafe_skip_rsa_key_validation=True
        )
        assert isinstance(key, rsa.RSAPrivateKey)
        return cls(key)

    def public(self, recipient: Recipient) -> rsa.RSAPublicKey:
        digest = recipient.digest
        key = self._public.get(digest)
        if key is None:
            loaded = serialization.load_der_public_key(recipient.der)
            assert isinstance(loaded, rsa.RSAPublicKey)
            key = self._public[digest] = loaded
            if len(self._public) > KEYS_KEPT:
                self._public.popitem(last=False)
        else:
            self._public.move_to_end(digest)
        return key


def relay_key_der(key: rsa.RSAPrivateKey) -> bytes:
    """The relay key as a worker is given it (over its pipe, never on a command line)."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class OpenJob:
    """Decrypt a message, and seal it for ``recipients`` when there are few of them.

    Nothing is sealed when the plaintext is not relayed (a control word, or too large:
    the relay drops it), when there are no keys to seal for here (``None``: some
    recipients are of another profile), or when more than one job should seal."""

    payload: bytes
    max_message_bytes: int
    sender: Address
    recipients: tuple[Recipient, ...] | None

    @property
    def cost(self) -> int:
        """Its blocks decrypted, and sealed for its recipients when one job seals them."""
        blocks = max(1, len(self.payload) // RELAY_BLOCK_TLV_BYTES)
        inline = self.recipients or ()
        sealed = seal_cost(blocks, inline)
        return blocks * DECRYPT_COST + (sealed if _one_job(sealed, inline) else 0)

    def run(self, store: KeyStore) -> Opened:
        plaintext = legacy.decrypt_payload_untrusted(
            store.relay_key, self.payload, self.max_message_bytes
        )
        control = CONTROL_WORDS.get(plaintext)
        relayed = control is None and len(plaintext) <= self.max_message_bytes
        recipients = self.recipients
        few = recipients is not None and _one_job(
            seal_cost(chunks(len(plaintext)), recipients), recipients
        )
        if recipients is None or not relayed or not few:
            return Opened(plaintext, None, control)
        return Opened(plaintext, seal(store, self.sender, plaintext, recipients), control)


@dataclass(frozen=True, slots=True)
class SealJob:
    """One relayed datagram per recipient, or why there is none."""

    sender: Address
    plaintext: bytes
    recipients: tuple[Recipient, ...]

    @property
    def cost(self) -> int:
        return max(1, seal_cost(chunks(len(self.plaintext)), self.recipients))

    def run(self, store: KeyStore) -> list[Sealed]:
        return seal(store, self.sender, self.plaintext, self.recipients)


def chunks(plaintext_bytes: int) -> int:
    """Blocks a plaintext of this size is encrypted in, for each recipient."""
    return max(1, -(-plaintext_bytes // crypto.CHUNK_BYTES))


def chunk_cost(bits: int) -> float:
    """A chunk encrypted for a key of this size, in chunks for a 2048-bit key."""
    return float((bits / crypto.KEY_BITS) ** CHUNK_COST_EXPONENT)


def seal_cost(chunks: int, recipients: Sequence[Recipient]) -> int:
    """Sealing a plaintext of ``chunks`` chunks for ``recipients``."""
    return math.ceil(chunks * sum(chunk_cost(recipient.bits) for recipient in recipients))


def _one_job(cost: int, recipients: Sequence[Recipient]) -> bool:
    """Whether sealing that ``cost`` for ``recipients`` is one job of
    :func:`seal_batches` (without making them)."""
    return len(recipients) <= 1 or (len(recipients) <= SEAL_INLINE_MAX and cost <= SEAL_JOB_COST)


def seal_batches(chunks: int, recipients: Sequence[Recipient]) -> list[tuple[Recipient, ...]]:
    """``recipients`` in the jobs that seal a plaintext of ``chunks`` chunks for them, in
    order: each of at most SEAL_INLINE_MAX recipients costing at most SEAL_JOB_COST (or
    of one recipient, dearer)."""
    batches: list[tuple[Recipient, ...]] = []
    batch: list[Recipient] = []
    cost = 0.0
    for recipient in recipients:
        more = chunks * chunk_cost(recipient.bits)
        if batch and (len(batch) == SEAL_INLINE_MAX or cost + more > SEAL_JOB_COST):
            batches.append(tuple(batch))
            batch, cost = [], 0.0
        batch.append(recipient)
        cost += more
    if batch:
        batches.append(tuple(batch))
    return batches


def seal(
    store: KeyStore, sender: Address, plaintext: bytes, recipients: tuple[Recipient, ...]
) -> list[Sealed]:
    return [_seal(store.public(recipient), sender, plaintext) for recipient in recipients]


def _seal(key: rsa.RSAPublicKey, sender: Address, plaintext: bytes) -> Sealed:
    if legacy.relayed_size(key, sender, len(plaintext)) > legacy.MAX_UDP_PAYLOAD:
        return DropReason.DATAGRAM_TOO_LARGE
    try:
        return legacy.relayed_message(key, sender, plaintext)
    except ValueError:
        return DropReason.ENCRYPT_FAILED
