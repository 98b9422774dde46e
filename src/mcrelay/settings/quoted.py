"""A setting's value as an error quotes it: whole when short, its start when long.

A 250 KB value in the settings file was a 250 KB error line, at start and at each
reload, into the journal (found by review).
"""

MAX_QUOTED_CHARS = 80


def quoted(text: str) -> str:
    """``repr(text)``, cut to :data:`MAX_QUOTED_CHARS` characters and its length said."""
    if len(text) <= MAX_QUOTED_CHARS:
        return repr(text)
    return f"{text[:MAX_QUOTED_CHARS]!r}... ({len(text)} characters)"
