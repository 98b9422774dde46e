"""Reading the small files an operator gives: settings, the API token, keys.

Each is read through one descriptor, opened non-blocking (a FIFO opens at once and
is then refused instead of hanging), checked to be a regular file on that very
descriptor, and read up to a bound (``/dev/zero`` or a huge file cannot fill the
memory). A secret is refused when group or others may access it. Callers that run
on the event loop hand these reads to a thread: a file system can still be slow.
"""

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


class FileError(Exception):
    """A file cannot be used; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class FileContents:
    data: bytes
    mode: int
    """Its permission bits, as read through the descriptor the data came from."""


def read_regular_file(
    path: Path, *, what: str, limit: int, follow_symlinks: bool = True
) -> FileContents | None:
    """The bytes of ``path`` (at most ``limit``), or ``None`` when there is no such file.

    ``what`` names the file in errors ("settings file", "API token file")."""
    flags = _OPEN_FLAGS if follow_symlinks else _OPEN_FLAGS | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise FileError(
                f"{what} {path} is a symbolic link; refusing to follow it: "
                "give the path of the file itself"
            ) from None
        raise FileError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileError(f"cannot read {what} {path}: {os.strerror(errno.EISDIR)}")
        if not stat.S_ISREG(info.st_mode):
            raise FileError(f"cannot read {what} {path}: not a regular file")
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise FileError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileError(f"{what} {path} is over {limit} bytes: too large to be one")
    return FileContents(data, stat.S_IMODE(info.st_mode))


def require_private(path: Path, contents: FileContents, what: str) -> None:
    """Refuse a secret that group or others may read or write, with the fix."""
    if contents.mode & 0o077:
        raise FileError(
            f"{what} {path} has mode {contents.mode:04o}; it must not be accessible to "
            f"group or others: chmod 600 {path}"
        )


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


MAX_TOKEN_FILE_BYTES = 4096
TOKEN_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F))
"""A bearer token is printable ASCII without spaces: what an HTTP header carries as is."""


def read_token_file(path: Path) -> str:
    """The API's bearer token: one line of printable ASCII in a file only its owner may read.

    A token that group or others may read, or one an ``Authorization`` header cannot
    carry (non-ASCII, spaces inside), is refused here rather than failing every request."""
    what = "API token file"
    contents = read_regular_file(path, what=what, limit=MAX_TOKEN_FILE_BYTES)
    if contents is None:
        raise FileError(f"cannot read {what} {path}: {os.strerror(errno.ENOENT)}")
    require_private(path, contents, what)
    token = contents.data.strip(b" \t\r\n").decode("ascii", errors="replace")
    if not token or not set(token) <= TOKEN_CHARACTERS:
        raise FileError(
            f"{what} {path} must hold one token of printable ASCII characters, "
            "with no spaces (for example: openssl rand -hex 32)"
        )
    return token
