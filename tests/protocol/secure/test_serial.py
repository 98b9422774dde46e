"""msg_seq arithmetic (RFC 1982 on 32 bits)."""

from hypothesis import given
from hypothesis import strategies as st

from mcrelay.protocol.secure.serial import serial_add, serial_diff

SEQS = st.integers(0, 0xFFFFFFFF)
STEPS = st.integers(-(1 << 31) + 1, (1 << 31) - 1)


def test_wrapping() -> None:
    assert serial_add(0xFFFFFFFF, 1) == 0
    assert serial_add(0, -1) == 0xFFFFFFFF
    assert serial_diff(0, 0xFFFFFFFF) == 1
    assert serial_diff(0xFFFFFFFF, 0) == -1
    assert serial_diff(1 << 31, 0) == -(1 << 31)  # undefined in RFC 1982: called behind


@given(SEQS, STEPS)
def test_diff_undoes_add(seq: int, step: int) -> None:
    assert 0 <= serial_add(seq, step) <= 0xFFFFFFFF
    assert serial_diff(serial_add(seq, step), seq) == step
    assert serial_diff(seq, serial_add(seq, step)) == -step
