"""Reading the small files an operator gives (settings, the API token, keys, lists of
keys), and writing the private ones the programs make themselves.

Each is read through one descriptor, opened non-blocking (a FIFO opens at once and
is then refused instead of hanging), checked to be a regular file on that very
descriptor, and read up to a bound (``/dev/zero`` or a huge file cannot fill the
memory). A secret is refused when group or others may access it; a list that says
whom to trust, when anyone but its owner (root or us) may change it. A private file
is written beside its place (mode 0600), synced, then linked or renamed into place,
so no reader ever sees half of one; one left there by a writer killed mid-write is
removed by the next writer, or reader (a key is written once). A private file, as a list, is refused when someone else
could replace it through one of its directories, or turn a link on its way. Callers that run on the event loop
hand these reads and writes to a thread: a file system can still be slow.
"""

import contextlib
import errno
import glob
import itertools
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
STALE_PARTIAL_S = 600.0
"""A file being written beside its place older than this was left by a writer that died."""


class FileError(Exception):
    """A file cannot be used; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class FileContents:
    data: bytes
    mode: int
    """Its permission bits, as read through the descriptor the data came from."""
    owner: int
    """Its owner's uid, from that same descriptor."""


def read_regular_file(
    path: Path, *, what: str, limit: int, follow_symlinks: bool = True
) -> FileContents | None:
    """The bytes of ``path`` (at most ``limit``), or ``None`` when there is no such file.

    ``what`` names the file in errors ("settings file", "API token file")."""
    flags = _OPEN_FLAGS if follow_symlinks else _OPEN_FLAGS | os.O_NOFOLLOW
    if "\0" in str(path):
        raise FileError(f"cannot read {what} {str(path)!r}: a path holds no NUL character")
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise FileError(
                f"{what} {path} is a symbolic link; refusing to follow it: put the file "
                "itself there, or give its own path where a setting names it"
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
    return FileContents(data, stat.S_IMODE(info.st_mode), info.st_uid)


def require_private(path: Path, contents: FileContents, what: str) -> None:
    """Refuse a secret that group or others may read or write, with the fix."""
    if contents.mode & 0o077:
        raise FileError(
            f"{what} {path} has mode {contents.mode:04o}; it must not be accessible to "
            f"group or others: chmod 600 {path}"
        )


def require_trusted_writers(
    path: Path, contents: FileContents, what: str, *, any_owner: bool = False
) -> None:
    """Refuse a file that says whom to trust when someone else could change it: it must
    belong to root or to us, and group and others must not be able to write it (as
    sshd's StrictModes asks of authorized_keys). ``any_owner``: a check on another
    user's behalf (``config check`` run by root for the daemon's user) asks only the
    mode."""
    if not any_owner and contents.owner not in (0, os.geteuid()):
        raise FileError(
            f"{what} {path} belongs to uid {contents.owner}, neither root nor this user "
            f"(uid {os.geteuid()}), who could change it: chown it"
        )
    if contents.mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise FileError(
            f"{what} {path} has mode {contents.mode:04o}; group or others may change it: "
            f"chmod go-w {path}"
        )


def require_trusted_directories(path: Path, what: str, *, any_owner: bool = False) -> None:
    """Refuse a file that says whom to trust when someone else could replace it through
    one of its directories (swap it, or a link on its way, for an older list): every
    directory up to the root, of the path as given, of each link met on the way to the
    file (a chain of them too) and of the file itself, must belong to root or to us, and
    group and others must not be able to write it unless it is sticky (as /tmp: there,
    only a file's owner may replace it). sshd asks this of the directories of
    authorized_keys; those of the links too, since a link in another user's directory
    could be turned to an older list (found by review, then for a link in the middle of
    a chain). A link in a sticky directory others may write must itself belong to root
    or to us, as the kernel's protected_symlinks asks: its owner may turn it anywhere
    (a state directory, pins or a list swapped through one in /tmp: found by review).
    ``any_owner``: as for :func:`require_trusted_writers`, but for such a link: root's
    check would not otherwise see whose it is (found by review), and the kernel lets
    root follow only its own there."""
    directories, links = _directories_on_the_way(path, what)
    checked: dict[Path, int] = {}
    for directory in directories:
        for each in (directory, *directory.parents):
            if each not in checked:
                checked[each] = _require_trusted_directory(each, path, what, any_owner)
    for link, owner in links:
        shared = checked[link.parent] & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and owner not in (0, os.geteuid()):
            raise FileError(
                f"{what} {path} goes through the link {link}, which belongs to uid {owner}, "
                f"in a directory others may change (mode {checked[link.parent]:04o}): they "
                "could turn it elsewhere; give a path that does not go through it"
            )


MAX_LINKS = 40
"""Links followed on the way to a file, as the kernel's own limit (ELOOP)."""


def _directories_on_the_way(path: Path, what: str) -> tuple[list[Path], list[tuple[Path, int]]]:
    """The directory of every link met resolving the path as the kernel does (a ``..``
    after a link goes up from where the link led, not from the text: found by review),
    and of the file it leads to; and each link met, with its owner's uid."""
    if path.is_absolute():
        given = path
    else:
        try:
            given = Path(os.getcwd()) / path  # not abspath: it drops a '..' from the text
        except OSError as exc:
            raise FileError(
                f"cannot find {what} {path}: the working directory it is in was removed "
                f"({exc.strerror})"
            ) from None
    found: list[Path] = []
    links: list[tuple[Path, int]] = []
    current = Path(given.anchor)
    parts = list(given.parts[1:])
    while parts:
        name = parts.pop(0)
        candidate = current / name
        try:
            info = os.lstat(candidate)
            target = Path(os.readlink(candidate)) if stat.S_ISLNK(info.st_mode) else None
        except (FileNotFoundError, NotADirectoryError):  # the reading says what is missing
            target = None
        except OSError as exc:
            raise FileError(
                f"cannot look at {candidate}, on the way to {what} {path}: {exc.strerror}"
            ) from None
        if target is not None:
            if len(links) == MAX_LINKS:
                raise FileError(f"cannot read {what} {path}: {os.strerror(errno.ELOOP)}")
            links.append((candidate, info.st_uid))
            found.append(current)  # the link's own directory
            if target.is_absolute():
                current = Path(target.anchor)
            parts[:0] = [part for part in target.parts if part != target.anchor]
        elif name == "..":
            current = current.parent
        elif name != ".":
            current = candidate
    found.append(current.parent)
    return found, links


def _require_trusted_directory(each: Path, path: Path, what: str, any_owner: bool) -> int:
    """The directory's mode, once it is one no one else could replace a file in."""
    try:
        info = os.stat(each)
    except OSError as exc:
        raise FileError(
            f"cannot look at {each}, a directory of {what} {path}: {exc.strerror}"
        ) from None
    if not any_owner and info.st_uid not in (0, os.geteuid()):
        raise FileError(
            f"{what} {path} is in {each}, which belongs to uid {info.st_uid}, neither "
            f"root nor this user (uid {os.geteuid()}): who could replace the file"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise FileError(
            f"{what} {path} is in {each}, which group or others may change (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): they could replace the file; "
            f"chmod go-w {each}"
        )
    return stat.S_IMODE(info.st_mode)


def load_private_file(
    path: Path, *, what: str, limit: int, parse: Callable[[bytes], T], any_owner: bool = False
) -> T | None:
    """What ``parse`` makes of the private file at ``path``, or ``None`` when there is none.

    The file is read without following a symbolic link. ``parse`` raises ``ValueError``
    with a message for a file that is not what it should be; that is reported before the
    mode, so a file that is not one is reported as such (it is to be replaced, whatever
    its mode), and the mode is the one read through the descriptor the data came from.
    ``any_owner``: a check on another user's behalf (``config check`` run by root for
    the daemon's user) does not ask that the file be ours. What a writer of it killed
    mid-write left beside it is removed, as a write does."""
    contents = read_regular_file(path, what=what, limit=limit, follow_symlinks=False)
    if contents is None:
        return None
    try:
        value = parse(contents.data)
    except ValueError as exc:
        raise FileError(f"{what} {path}: {exc}") from None
    require_private(path, contents, what)
    # Nor may anyone else replace it through a directory: a key swapped for one they
    # made is one they know (a state directory of mode 0777 was taken: found by review).
    require_trusted_directories(path, what, any_owner=any_owner)
    if contents.owner != os.geteuid() and not any_owner:
        # A key someone else put there (in a shared directory, say) is one they know.
        raise FileError(
            f"{what} {path} belongs to uid {contents.owner}, not to this user "
            f"(uid {os.geteuid()}): what another user put there could be what they chose "
            "(a key they know, say); chown it if it is this user's"
        )
    if not any_owner:  # config check looks, and changes nothing
        # A key file is never written again once there: its creator's leftovers go here.
        _remove_stale_partials(path)
    return value


def load_or_create_private_file(
    path: Path,
    *,
    what: str,
    limit: int,
    parse: Callable[[bytes], T],
    make: Callable[[], tuple[T, bytes]],
) -> tuple[T, bool]:
    """The value in the private file at ``path``, or a new one (``make``: the value and the
    bytes to write) written there, mode 0600; and whether it was created.

    Two processes starting at once both keep whichever file was linked into place first."""
    value = load_private_file(path, what=what, limit=limit, parse=parse)
    if value is not None:
        return value, False
    made, data = make()
    if create_private_file(path, data, what=what):
        return made, True
    value = load_private_file(path, what=what, limit=limit, parse=parse)
    if value is None:
        raise FileError(f"cannot read {what} {path}: it vanished while being created")
    return value, False


def write_new_private_file(path: Path, make: Callable[[], tuple[T, bytes]], *, what: str) -> T:
    """A new private file at ``path`` (mode 0600) holding what ``make`` returns, whose value
    is returned; an existing file (or link, or anything) is never replaced. (``keygen``'s:
    root may write it for the daemon's user, into a directory that user owns, as
    systemd's StateDirectory; its directories' modes are asked, not their owners, as
    ``config check`` run by root does: found by review.)"""
    if os.path.lexists(path):  # before making, which may be slow; the link below decides
        raise _exists(path, what)
    made, data = make()
    if not create_private_file(path, data, what=what, any_owner=os.geteuid() == 0):
        raise _exists(path, what)
    return made


def _exists(path: Path, what: str) -> FileError:
    if path.is_dir() and not path.is_symlink():  # 'keygen DIR', or '' (found by review)
        return FileError(f"{what} {path} is a directory: give the path of a file in it")
    return FileError(f"{what} {path} already exists; it is not replaced")


def create_private_file(path: Path, data: bytes, *, what: str, any_owner: bool = False) -> bool:
    """Write ``data`` to a new file at ``path``, mode 0600, making its directory (0700) if
    missing. It is written beside ``path`` and linked into place, so that no reader ever
    sees half of it and an existing file is never replaced: False, and nothing written,
    when ``path`` exists."""
    partial = _write_beside(path, data, what, any_owner)
    try:
        os.link(partial, path)
        sync_directory(path.parent)
    except FileExistsError:
        return False
    except OSError as exc:
        raise FileError(f"cannot create {what} {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return True


def replace_private_file(path: Path, data: bytes, *, what: str) -> None:
    """Write ``data`` to ``path``, mode 0600, in place of what is there: written beside it,
    then renamed over it, so a reader sees the old file or the new one, whole."""
    partial = _write_beside(path, data, what)
    try:
        os.replace(partial, path)
        sync_directory(path.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise FileError(f"cannot write {what} {path}: {exc.strerror}") from None


def make_private_directories(directory: Path) -> None:
    """``directory`` and its missing parents, each made mode 0700, as the XDG spec asks
    (``mkdir -p`` makes the parents by the umask, 0755 most often). One that exists
    keeps its mode. Raises ``OSError`` as ``mkdir`` does."""
    missing = list(itertools.takewhile(lambda level: not os.path.lexists(level), directory.parents))
    for level in reversed(missing):
        level.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)


def _write_beside(path: Path, data: bytes, what: str, any_owner: bool = False) -> Path:
    """A new file in ``path``'s directory holding ``data``, synced; the caller moves it."""
    try:
        make_private_directories(path.parent)
    except FileExistsError as exc:  # from mkdir: a file where a directory should be
        raise FileError(f"cannot create {what} {path}: {exc.filename} is not a directory") from None
    except OSError as exc:
        raise FileError(f"cannot create {what} {path}: {exc.strerror}") from None
    require_trusted_directories(path, what, any_owner=any_owner)  # as the file will be read
    _remove_stale_partials(path)
    try:
        # mkstemp: mode 0600, O_EXCL and a random name, so no stale or planted file is reused.
        fd, partial_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FileError(f"cannot create {what} {path}: {exc.strerror}") from None
    partial = Path(partial_name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise FileError(f"cannot create {what} {path}: {exc.strerror}") from None
    return partial


def _remove_stale_partials(path: Path) -> None:
    """Remove what an earlier writer of ``path`` killed mid-write left beside it (a whole
    private key, say, kept for good: found by review), once older than
    :data:`STALE_PARTIAL_S`: another process may be writing its own right now."""
    stale_before = time.time() - STALE_PARTIAL_S
    try:
        partials = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:  # a directory we may not list: what is there stays
        return
    for partial in partials:
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
            if partial.lstat().st_mtime < stale_before:
                partial.unlink()


def sync_directory(directory: Path) -> None:
    """Make a new link survive a crash, so a restart finds the key clients have pinned.
    Best effort: some file systems cannot sync a directory, and the file is in place."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def read_token_file(path: Path, *, any_owner: bool = False) -> str:
    """The API's bearer token: one line of printable ASCII in a file only its owner may read.

    A token that group or others may read, or one an ``Authorization`` header cannot
    carry (non-ASCII, spaces inside), is refused here rather than failing every request;
    so is one that belongs to neither root nor this user (someone else put it there, and
    knows it), unless ``any_owner``: the CLI sending it, ``config check`` run by root for
    the daemon's user."""
    what = "API token file"
    contents = read_regular_file(path, what=what, limit=MAX_TOKEN_FILE_BYTES)
    if contents is None:
        raise FileError(f"cannot read {what} {path}: {os.strerror(errno.ENOENT)}")
    require_private(path, contents, what)
    if contents.owner not in (0, os.geteuid()) and not any_owner:
        raise FileError(
            f"{what} {path} belongs to uid {contents.owner}, neither root nor this user "
            f"(uid {os.geteuid()}), who may know the token: chown it, or make a new one"
        )
    token = contents.data.strip(b" \t\r\n").decode("ascii", errors="replace")
    if not token or not set(token) <= TOKEN_CHARACTERS:
        raise FileError(
            f"{what} {path} must hold one token of printable ASCII characters, "
            "with no spaces (for example: openssl rand -hex 32)"
        )
    return token
