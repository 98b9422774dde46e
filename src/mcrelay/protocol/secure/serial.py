"""Serial-number arithmetic on msg_seq (RFC 1982, SERIAL_BITS = 32).

Each side numbers its messages from 0 per epoch and wraps at 2^32. With at most 8
messages in flight and a re-ACK window of 1,024, two msg_seqs compared are always
far less than 2^31 apart, so the comparison is never undefined in practice; at
exactly 2^31 apart :func:`serial_diff` calls the first one behind.
"""

SERIAL_MODULUS = 1 << 32
_HALF = 1 << 31


def serial_add(msg_seq: int, n: int) -> int:
    """``msg_seq + n``, wrapped to 32 bits (``n`` may be negative)."""
    return (msg_seq + n) % SERIAL_MODULUS


def serial_diff(a: int, b: int) -> int:
    """How far ``a`` is ahead of ``b``: positive after, negative before, in ``[-2^31, 2^31)``."""
    distance = (a - b) % SERIAL_MODULUS
    return distance - SERIAL_MODULUS if distance >= _HALF else distance
