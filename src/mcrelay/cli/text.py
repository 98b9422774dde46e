"""Text in and out: messages from the command line and stdin as the bytes they came
as, and text from elsewhere made safe for a terminal.

Python hands over bytes of argv that are not UTF-8 as lone surrogates
(``surrogateescape``), and the command reads stdin the same way (see
``Environment``). Encoding with that handler gives the original bytes back, so a
message goes out exactly as it was typed or piped: the protocol carries bytes.
"""

import json
from typing import Any


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


def json_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON that keeps text readable (``é``, not ``\\u00e9``) but escapes,
    as ``\\uXXXX``, every character a terminal acts on that JSON itself leaves raw: DEL,
    the C1 controls (U+009B is CSI), bidi and line separators. Valid JSON either way."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return "".join(c if c.isprintable() or c == "\n" else _json_escape(c) for c in text)


def _json_escape(character: str) -> str:
    code = ord(character)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
