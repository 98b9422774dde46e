"""Exit codes of ``mcrelay`` and the API failures that map to them (documented in the README)."""

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    UNREACHABLE = 3
    SERVER_ERROR = 4
    KEY_MISMATCH = 5
    HUNG_UP = 129
    """128 + SIGHUP: ``send`` ended by its terminal's hangup, after its goodbye."""
    INTERRUPTED = 130
    """128 + SIGINT, as shells report a process that Ctrl-C ended."""
    TERMINATED = 143
    """128 + SIGTERM: ``send`` ended by SIGTERM, after its goodbye."""


MEANINGS = {
    ExitStatus.OK: "done",
    ExitStatus.ERROR: "the API refused (4xx), the daemon could not start (port in use), "
    "the relay ended a secure session (kicked, banned, or replaced by another client with "
    "the same identity key, or removed while the chat held its messages back, its output "
    "read too slowly), or a legacy chat dropped messages its output was too slow to take",
    ExitStatus.USAGE: "usage: bad arguments, environment variables or settings, or a file "
    "that cannot be used (a key file, the API token file)",
    ExitStatus.UNREACHABLE: "no relay answered (with --secure: or one answered but did not "
    "take the client, or, with send, or chat at the end of its input, did not acknowledge "
    "every message), or the daemon's API cannot be reached or did not answer within 30 s",
    ExitStatus.SERVER_ERROR: "the API failed (5xx)",
    ExitStatus.KEY_MISMATCH: "the relay's key does not match --relay-fingerprint, or the "
    "relay came back with another key than the one the client registered with; with "
    "--secure, not the one pinned with --relay-key or known from an earlier use, or two "
    "relays answered with different keys",
    ExitStatus.HUNG_UP: "send ended by the hangup of its terminal before it finished, "
    "as by Ctrl-C (its goodbye said)",
    ExitStatus.INTERRUPTED: "interrupted by Ctrl-C before it finished (chat, events and "
    "the daemon end on Ctrl-C with 0)",
    ExitStatus.TERMINATED: "send ended by SIGTERM before it finished, as by Ctrl-C (its "
    "goodbye said)",
}
"""What each exit status means, for --help and the manual page (and the README's table)."""


class ApiError(Exception):
    """The daemon's API answered with an error: 4xx exits 1, 5xx exits 4."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiAnswerError(Exception):
    """The API answered what this mcrelay cannot read: no JSON, or not of the shape it
    expects (another program at the address, or another version): exits 1."""


class ApiUnreachable(Exception):
    """Nothing answered at the API's address (exits 3)."""
