"""The API server's own errors, apart from the server so that the CLI can name them
without loading hypercorn."""


class ApiBindError(Exception):
    """The API cannot listen where it was told to; the message says why."""
