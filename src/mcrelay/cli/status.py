"""Exit codes of ``mcrelay`` and the API failures that map to them (documented in the README)."""

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
    INTERRUPTED = 130
    """Ctrl-C before the command finished (128 + SIGINT, as shells report it)."""


class ApiError(Exception):
    """The daemon's API answered with an error: 4xx exits 1, 5xx exits 4."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiUnreachable(Exception):
    """Nothing answered at the API's address (exits 3)."""
