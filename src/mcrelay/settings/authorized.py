"""The authorized-keys file (``--authorized-keys``): who may join by the secure profile.

One ``KEY name`` line per member, the key in standard base64 (44 characters), the
name the rest of the line; blank lines and lines starting with ``#`` are skipped
(see ``protocol.secure.keys.parse_authorized_keys``). The file is read as
:mod:`mcrelay.files` reads every file (regular, bounded), and, since it says whom
to let in, only root or its owner may change it. It is taken whole or not at all:
one bad line refuses the file, naming each bad line, so a typo never locks a member
out (or lets a half-read list stand) without a word.
"""

import errno
import os
from pathlib import Path

from mcrelay.files import (
    FileError,
    read_regular_file,
    require_trusted_directories,
    require_trusted_writers,
)
from mcrelay.protocol.secure.keys import AuthorizedKey, parse_authorized_keys

WHAT = "authorized keys file"
MAX_AUTHORIZED_KEYS_FILE_BYTES = 16 * 1024 * 1024
"""65,536 members (the page's limit) of the longest line (44 + 1 + 128 + 1 characters,
names of up to 4 bytes a character aside) fit in 12 MiB."""
ERRORS_SHOWN = 5
"""Bad lines named in the one error line; the others are counted."""


def read_authorized_keys(path: Path, *, any_owner: bool = False) -> tuple[AuthorizedKey, ...]:
    """The entries of the file at ``path``, in its order; ``FileError`` naming the file and
    its bad lines when it cannot be used. A link is followed (as sshd does; NixOS and
    stow install files so), the directories of the link and of its file checked.
    ``any_owner``: for ``config check`` on the daemon's behalf."""
    contents = read_regular_file(path, what=WHAT, limit=MAX_AUTHORIZED_KEYS_FILE_BYTES)
    if contents is None:
        raise FileError(f"cannot read {WHAT} {path}: {os.strerror(errno.ENOENT)}")
    require_trusted_writers(path, contents, WHAT, any_owner=any_owner)
    require_trusted_directories(path, WHAT, any_owner=any_owner)
    try:
        text = contents.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = contents.data.count(b"\n", 0, exc.start) + 1
        raise FileError(f"{WHAT} {path}: line {line}: not UTF-8 text") from None
    parsed = parse_authorized_keys(text)
    if parsed.errors:
        shown = "; ".join(str(error) for error in parsed.errors[:ERRORS_SHOWN])
        more = len(parsed.errors) - ERRORS_SHOWN
        if more > 0:
            shown += f"; and {more} more bad line{'s' if more > 1 else ''}"
        raise FileError(f"{WHAT} {path}: {shown}")
    return parsed.entries
