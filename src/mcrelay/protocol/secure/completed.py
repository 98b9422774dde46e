"""Which recent msg_seqs completed, and of how many fragments: a fragment of one is
ACKed again (full bitmap, of the count it completed with) while it is within
:data:`REACK_WINDOW` of the highest completed; older ones are ignored. A bitmap of
1,024 bits, whatever the peer sends, and once a message of several fragments has
completed, a byte per msg_seq in the window for the counts (most peers send only
messages of one fragment: none)."""

from mcrelay.protocol.secure.serial import serial_diff

REACK_WINDOW = 1024


class CompletedWindow:
    def __init__(self) -> None:
        self._top: int | None = None
        self._bits = 0
        """Bit d: msg_seq ``_top - d`` completed (d < REACK_WINDOW)."""
        self._counts: bytearray | None = None
        """The count of msg_seq ``s`` at ``s % REACK_WINDOW`` (None: every count was 1)."""

    def __contains__(self, msg_seq: int) -> bool:
        if self._top is None:
            return False
        behind = serial_diff(self._top, msg_seq)
        return 0 <= behind < REACK_WINDOW and bool(self._bits >> behind & 1)

    def count(self, msg_seq: int) -> int | None:
        """How many fragments ``msg_seq`` completed with (None: not in the window)."""
        if msg_seq not in self:
            return None
        return 1 if self._counts is None else self._counts[msg_seq % REACK_WINDOW]

    def add(self, msg_seq: int, count: int) -> None:
        if self._top is None:
            self._top, self._bits = msg_seq, 1
        else:
            ahead = serial_diff(msg_seq, self._top)
            if ahead > 0:
                kept = self._bits << ahead if ahead < REACK_WINDOW else 0
                self._bits = (kept | 1) & ((1 << REACK_WINDOW) - 1)
                self._top = msg_seq
            elif -ahead < REACK_WINDOW:
                self._bits |= 1 << -ahead
            else:
                return
        if count > 1 and self._counts is None:
            self._counts = bytearray(b"\x01" * REACK_WINDOW)
        if self._counts is not None:
            self._counts[msg_seq % REACK_WINDOW] = count

    def discard(self, msg_seq: int) -> None:
        """An abandoned message that had completed: not ACKed again."""
        if msg_seq in self:
            self._bits &= ~(1 << serial_diff(self._top or 0, msg_seq))
