"""The relay's RSA work, as jobs the crypto workers run (in processes of their own).

A message is opened (its blocks decrypted with the relay key) and sealed (encrypted
for each recipient). For a few recipients both happen in one job, so a message costs
one hand-off; a larger fan-out is sealed in jobs of a few recipients each, fewer the
longer the message (:data:`SEAL_JOB_COST`).

A job is plain data (it crosses a pipe): a recipient's key travels as its DER bytes
and their SHA-256, and the worker keeps the keys it loaded in a :class:`KeyStore`. Its
``cost`` (in chunks encrypted for a recipient) weighs it in the workers' turns between
senders.
"""

from collections import OrderedDict
from dataclasses import dataclass

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
"""The most one job seals (see :func:`recipients_per_job`), in chunks encrypted for a
recipient: about 22 ms. A worker's job is not interrupted for another member's, so a
48 KB message is sealed 4 recipients a job (16 a job took 90 ms); a message up to
12 KB, 16 a job as before."""
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

Recipient = tuple[bytes, bytes]
"""A recipient's key as a job carries it: its SHA-256 (the member's ``origin_id``) and
its DER SubjectPublicKeyInfo (the member's identity's ``key``)."""


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
        digest, der = recipient
        key = self._public.get(digest)
        if key is None:
            loaded = serialization.load_der_public_key(der)
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
        """Its blocks decrypted, and sealed for its recipients when they are few."""
        blocks = max(1, len(self.payload) // RELAY_BLOCK_TLV_BYTES)
        inline = len(self.recipients or ())
        return blocks * (DECRYPT_COST + (inline if inline <= recipients_per_job(blocks) else 0))

    def run(self, store: KeyStore) -> Opened:
        plaintext = legacy.decrypt_payload_untrusted(
            store.relay_key, self.payload, self.max_message_bytes
        )
        control = CONTROL_WORDS.get(plaintext)
        relayed = control is None and len(plaintext) <= self.max_message_bytes
        few = self.recipients is not None and len(self.recipients) <= recipients_per_job(
            chunks(len(plaintext))
        )
        if self.recipients is None or not relayed or not few:
            return Opened(plaintext, None, control)
        return Opened(plaintext, seal(store, self.sender, plaintext, self.recipients), control)


@dataclass(frozen=True, slots=True)
class SealJob:
    """One relayed datagram per recipient, or why there is none."""

    sender: Address
    plaintext: bytes
    recipients: tuple[Recipient, ...]

    @property
    def cost(self) -> int:
        return chunks(len(self.plaintext)) * len(self.recipients)

    def run(self, store: KeyStore) -> list[Sealed]:
        return seal(store, self.sender, self.plaintext, self.recipients)


def chunks(plaintext_bytes: int) -> int:
    """Blocks a plaintext of this size is encrypted in, for each recipient."""
    return max(1, -(-plaintext_bytes // crypto.CHUNK_BYTES))


def recipients_per_job(chunks: int) -> int:
    """How many recipients one job seals a plaintext of ``chunks`` chunks for."""
    return max(1, min(SEAL_INLINE_MAX, SEAL_JOB_COST // chunks))


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
