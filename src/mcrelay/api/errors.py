"""The API server's own errors, apart from the server so that the CLI can name them
without loading hypercorn."""


class ApiBindError(Exception):
    """The API cannot listen where it was told to; the message says why."""


class NoRoomForApi(Exception):
    """The open-file limit leaves the API no connection at all: a setting to fix (exit 2),
    not an API that refuses every connection (found by review)."""
