"""Exit codes of ``mcrelay``, in one place (documented in the README)."""

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1
    """The request was refused, or the daemon could not start."""
    USAGE = 2
    """Bad arguments, environment variables or settings."""
    UNREACHABLE = 3
    """No relay (or daemon) answered."""
    SERVER_ERROR = 4
    KEY_MISMATCH = 5
    """The relay's key does not match ``--relay-fingerprint``."""
