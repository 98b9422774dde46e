"""What opening a message gives, and a recipient's copy: results of a profile's work.

Kept apart from :mod:`mcrelay.core.profile` (which needs Trio), so that a crypto worker
process, which returns them, imports no more than it needs.
"""

from dataclasses import dataclass

from mcrelay.protocol.errors import DropReason

Sealed = bytes | DropReason
"""A recipient's copy, or why it has none."""


@dataclass(frozen=True, slots=True)
class Opened:
    """A message as its profile decoded it."""

    plaintext: bytes
    sealed: list[Sealed] | None = None
    """Copies for the recipients, when the profile sealed them on the way."""
    control: str | None = None
    """Not a message to relay but an in-band request of its sender: ``refresh`` (it is
    alive) or ``disconnect`` (it leaves)."""
