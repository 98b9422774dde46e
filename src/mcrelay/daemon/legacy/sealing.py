"""The relay's RSA work, as plain functions the crypto workers run.

A message is opened (its blocks decrypted with the relay key) and sealed (encrypted
for each recipient). For a few recipients both happen in one job, so a message costs
one hand-off; a larger fan-out is sealed in jobs of a few recipients each.
"""

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.core.profile import Opened, Sealed
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason

SEAL_INLINE_MAX = 16
"""Recipients sealed in the job that decrypts; more are sealed in jobs of this many.
(At 8, a message to 11 recipients cost two more jobs, and its task two more wakes: the
sweep's S=4 R=8 peak was 12 % lower; at 16 a job of the largest 100-byte fan-out it
takes whole is still about 1 ms.)"""


CONTROL_WORDS = {legacy.CONNECT_WORD: "refresh", legacy.DISCONNECT_WORD: "disconnect"}
"""The seed client's in-band words: a message of exactly one of these is not chat."""


def open_and_seal(
    relay_key: rsa.RSAPrivateKey,
    payload: bytes,
    max_message_bytes: int,
    sender: Address,
    keys: Sequence[rsa.RSAPublicKey] | None,
) -> Opened:
    """Decrypt, and seal for the recipients' ``keys`` when there are few of them.

    Nothing is sealed when the plaintext is not relayed (a control word, or too large:
    the relay drops it), when there are no keys to seal for here, or when more than
    one job should seal."""
    plaintext = legacy.decrypt_payload_untrusted(relay_key, payload, max_message_bytes)
    control = CONTROL_WORDS.get(plaintext)
    relayed = control is None and len(plaintext) <= max_message_bytes
    if keys is None or not relayed or len(keys) > SEAL_INLINE_MAX:
        return Opened(plaintext, None, control)
    return Opened(plaintext, seal_batch(sender, plaintext, keys), control)


def seal_batch(sender: Address, plaintext: bytes, keys: Sequence[rsa.RSAPublicKey]) -> list[Sealed]:
    """One relayed datagram per key, or why there is none."""
    return [_seal(key, sender, plaintext) for key in keys]


def _seal(key: rsa.RSAPublicKey, sender: Address, plaintext: bytes) -> Sealed:
    if legacy.relayed_size(key, sender, len(plaintext)) > legacy.MAX_UDP_PAYLOAD:
        return DropReason.DATAGRAM_TOO_LARGE
    try:
        return legacy.relayed_message(key, sender, plaintext)
    except ValueError:
        return DropReason.ENCRYPT_FAILED
