"""A bound on a settings file's dotted keys, checked before the TOML reader sees it.

Python's ``tomllib`` takes time and memory quadratic in the parts of a dotted key: an
80 KB line ``x.x.x....x = 1`` took 27 s and 6.2 GB, and a reload cannot stop the thread
that reads it (found by review). The settings need two parts at most (a section and a
key), so a line with more than :data:`MAX_DOTS_PER_LINE` dots outside strings and
comments is refused first. With the file's bound (``MAX_SETTINGS_FILE_BYTES``), the
worst a file can then cost the reader is a fraction of a second and tens of MB.

The scan knows TOML's strings (basic and literal, one line or several) and comments,
no more: a string left open ends it, and the TOML reader then says where.
"""

import re

MAX_DOTS_PER_LINE = 32

_PLAIN = re.compile(r"[^\n#\"'.]*")


def check_dotted_keys(text: str) -> None:
    """Raise ``ValueError`` naming the first line with too many dots outside strings."""
    line, dots, index, end = 1, 0, 0, len(text)
    while True:
        match = _PLAIN.match(text, index)
        assert match is not None  # the pattern matches the empty string
        index = match.end()
        if index >= end:
            return
        char = text[index]
        if char == "\n":
            line, dots, index = line + 1, 0, index + 1
        elif char == ".":
            dots += 1
            if dots > MAX_DOTS_PER_LINE:
                raise ValueError(
                    f"line {line}: more than {MAX_DOTS_PER_LINE} dots outside strings (no "
                    "setting has a key of that many parts)"
                )
            index += 1
        elif char == "#":
            newline = text.find("\n", index)
            index = end if newline < 0 else newline
        else:
            after = _string_end(text, index, char)
            if after is None:
                return
            line += text.count("\n", index, after)
            index = after


def _string_end(text: str, start: int, quote: str) -> int | None:
    """Where the string that opens at ``start`` with ``quote`` ends (past its closing
    quotes), or None when it does not."""
    closing = quote * 3 if text.startswith(quote * 3, start) else quote
    search = start + len(closing)
    while True:
        found = text.find(closing, search)
        if found < 0:
            return None
        if len(closing) == 1 and "\n" in text[search:found]:
            return None  # a one-line string left open
        if quote == '"' and _escaped(text, found, search):
            search = found + 1
            continue
        after = found + len(closing)
        if len(closing) == 3:  # up to two quotes of its own before the closing three
            while after < len(text) and text[after] == quote and after - found < 5:
                after += 1
        return after


def _escaped(text: str, index: int, floor: int) -> bool:
    """Is the quote at ``index`` escaped (an odd run of backslashes before it)?"""
    before = index
    while before > floor and text[before - 1] == "\\":
        before -= 1
    return (index - before) % 2 == 1
