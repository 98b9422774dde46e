"""Which recent msg_seqs completed: a fragment of one is ACKed again (full bitmap)
while it is within :data:`REACK_WINDOW` of the highest completed; older ones are
ignored. A bitmap of 1,024 bits, whatever the peer sends."""

from mcrelay.protocol.secure.serial import serial_diff

REACK_WINDOW = 1024


class CompletedWindow:
    def __init__(self) -> None:
        self._top: int | None = None
        self._bits = 0
        """Bit d: msg_seq ``_top - d`` completed (d < REACK_WINDOW)."""

    def __contains__(self, msg_seq: int) -> bool:
        if self._top is None:
            return False
        behind = serial_diff(self._top, msg_seq)
        return 0 <= behind < REACK_WINDOW and bool(self._bits >> behind & 1)

    def add(self, msg_seq: int) -> None:
        if self._top is None:
            self._top, self._bits = msg_seq, 1
            return
        ahead = serial_diff(msg_seq, self._top)
        if ahead > 0:
            kept = self._bits << ahead if ahead < REACK_WINDOW else 0
            self._bits = (kept | 1) & ((1 << REACK_WINDOW) - 1)
            self._top = msg_seq
        elif -ahead < REACK_WINDOW:
            self._bits |= 1 << -ahead

    def discard(self, msg_seq: int) -> None:
        """An abandoned message that had completed: not ACKed again."""
        if msg_seq in self:
            self._bits &= ~(1 << serial_diff(self._top or 0, msg_seq))
