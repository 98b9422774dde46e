"""Text in and out: messages from the command line and stdin as the bytes they came
as, and text from elsewhere made safe for a terminal.

Python hands over bytes of argv that are not UTF-8 as lone surrogates
(``surrogateescape``), and the command reads stdin the same way (see
``Environment``). Encoding with that handler gives the original bytes back, so a
message goes out exactly as it was typed or piped: the protocol carries bytes.
"""


def message_bytes(text: str) -> bytes:
    """The bytes ``text`` came from; ``ValueError`` for text that came from no bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"character {exc.object[exc.start]!a} at {exc.start} is not text; nothing sent"
        ) from None


def printable(text: str) -> str:
    """Text made safe for a terminal: control characters (newlines and escape
    sequences included) become visible ``\\xNN`` escapes, so nobody can fake a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
