"""A secure client's files: its identity key and the relays it knows.

The identity is a Curve25519 private key file, base64 text, mode 0600, made on first
use (as the relay's secure key file). The known-relays file is one line per relay,
``HOST:PORT KEY`` (the address the client was told to use, and the relay's public key
in base64), as ssh's known_hosts: it says whom to trust, so it must belong to root or
to us and nobody else may write it, replace it through a directory or turn a link on
its way (as sshd's StrictModes); the client rewrites it whole (mode 0600) when it
learns a key. Blank lines and ``#`` comments are kept out of the parse.

One key is one member: a second client with the same identity would replace the
first one's session at the relay. So a client holds its identity file locked while it
runs (:func:`hold_identity`), and a second one on this machine is refused and told.
"""

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mcrelay.files import (
    FileError,
    load_or_create_private_file,
    make_private_directories,
    read_regular_file,
    replace_private_file,
    require_trusted_directories,
    require_trusted_writers,
)
from mcrelay.protocol.addresses import format_address, parse_address
from mcrelay.protocol.secure.client_handshake import low_order
from mcrelay.protocol.secure.keys import (
    KeyPair,
    KeyTextError,
    decode_key,
    encode_key,
    parse_private_key_text,
    private_key_text,
)

MAX_IDENTITY_FILE_BYTES = 1024
MAX_KNOWN_RELAYS_BYTES = 1024 * 1024
RETARGETS = 3
"""Times the known-relays link may be turned elsewhere while a client locks it."""
LOCK_WAIT_S = 5.0
"""How long a client waits for another one's lock on the known-relays file: a client
stopped (``SIGSTOP``, a debugger) while it held it would hold every other one's first
use of a relay for good (found by review)."""
LOCK_POLL_S = 0.05
IDENTITY_WHAT = "identity key file"
KNOWN_WHAT = "known-relays file"
IDENTITY_FILE_NAME = "identity-key"
KNOWN_RELAYS_FILE_NAME = "known_relays"


def load_or_create_identity(path: Path) -> tuple[KeyPair, bool]:
    """The key pair in ``path``, or a new one written there (0600); and whether it is new.
    Raises :class:`FileError`."""

    def make() -> tuple[KeyPair, bytes]:
        pair = KeyPair.generate()
        return pair, private_key_text(pair)

    return load_or_create_private_file(
        path,
        what=IDENTITY_WHAT,
        limit=MAX_IDENTITY_FILE_BYTES,
        parse=parse_private_key_text,
        make=make,
    )


@contextmanager
def hold_identity(path: Path) -> Iterator[None]:
    """Hold the identity file locked (``flock``) while the client runs; raises
    :class:`FileError` when another client on this machine holds it."""
    try:
        # As the key was read: no symbolic link followed, no FIFO waited on.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise FileError(f"cannot open {IDENTITY_WHAT} {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileError(f"{IDENTITY_WHAT} {path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileError(
                f"{IDENTITY_WHAT} {path} is in use by another mcrelay client: one key is one "
                "member (the relay would replace that client's session); give this one its "
                "own --identity-file"
            ) from None
        yield
    finally:
        os.close(fd)


def parse_known_relays(text: str) -> dict[str, bytes]:
    """``HOST:PORT KEY`` lines; raises ``ValueError`` naming the first bad line."""
    known: dict[str, bytes] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split()
        try:
            if len(words) != 2:
                raise ValueError("write HOST:PORT KEY")
            # Kept under the address as the client writes it, so that a pin written
            # otherwise (a leading zero, an IPv6 spelling) is still found.
            relay = format_address(parse_address(words[0]))
            key = decode_key(words[1])
            if low_order(key):
                raise ValueError(f"{relay}: a Curve25519 key of low order: no relay holds it")
            if known.get(relay, key) != key:
                raise ValueError(f"{relay} is also on line {lines[relay]}, with another key")
        except (ValueError, KeyTextError) as exc:
            raise ValueError(f"line {number}: {exc}") from None
        known[relay] = key
        lines.setdefault(relay, number)
    return known


def load_known_relays(path: Path) -> dict[str, bytes]:
    """The relays ``path`` lists (none when there is no file). Raises :class:`FileError`,
    for a lock beside it that :func:`remember_relay` would refuse too: said at start,
    not after a session trusted on first use."""
    known = _read_known_relays(path)[1]
    lock = _lock_path(Path(os.path.realpath(path)))
    try:
        _require_own_lock(os.lstat(lock), lock, path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise FileError(f"cannot lock {KNOWN_WHAT} {path} ({lock}): {exc.strerror}") from None
    return known


def _read_known_relays(path: Path) -> tuple[str, dict[str, bytes]]:
    """The file's text and the relays it lists."""
    contents = read_regular_file(path, what=KNOWN_WHAT, limit=MAX_KNOWN_RELAYS_BYTES)
    if contents is None:
        return "", {}
    require_trusted_writers(path, contents, KNOWN_WHAT)
    # Nor may anyone else replace it through a directory (left from review: a planted
    # list would be trusted as ours).
    require_trusted_directories(path, KNOWN_WHAT)
    try:
        text = contents.data.decode("utf-8")
    except UnicodeDecodeError as exc:  # said as the authorized keys' (found by review)
        line = contents.data.count(b"\n", 0, exc.start) + 1
        raise FileError(f"{KNOWN_WHAT} {path}: line {line}: not UTF-8 text") from None
    try:
        return text, parse_known_relays(text)
    except ValueError as exc:
        raise FileError(f"{KNOWN_WHAT} {path}: {exc}") from None


def _lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def _require_own_lock(info: os.stat_result, lock: Path, path: Path) -> None:
    """Refuse a lock someone else made where others may write (in /tmp, say): they could
    hold it for good, and every client would trust its relays on first use again, each
    time (found by review)."""
    if info.st_uid in (0, os.geteuid()):
        return
    mode = stat.S_IMODE(os.stat(lock.parent).st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise FileError(
            f"cannot lock {KNOWN_WHAT} {path}: {lock} belongs to uid {info.st_uid}, in a "
            f"directory others may change (mode {mode:04o}), who could hold it for good: "
            "keep the file in a directory of your own (--known-relays)"
        )


def _open_lock(lock: Path) -> int:
    """The lock's descriptor: read-only when it is there (``flock`` needs no more, and a
    read-only file system refused a write to one: found by review), else a new one."""
    flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        return os.open(lock, os.O_RDONLY | flags)
    except FileNotFoundError:
        pass
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | flags, 0o600)
    except FileExistsError:  # another client made it meanwhile
        return os.open(lock, os.O_RDONLY | flags)


def _lock(target: Path, path: Path, wait_s: float) -> int:
    """The lock beside ``target`` (what ``path`` leads to), taken within ``wait_s``;
    its descriptor."""
    lock = _lock_path(target)
    try:
        fd = _open_lock(lock)
    except OSError as exc:
        raise FileError(f"cannot lock {KNOWN_WHAT} {path} ({lock}): {exc.strerror}") from None
    deadline = time.monotonic() + wait_s
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileError(f"cannot lock {KNOWN_WHAT} {path}: {lock} is not a regular file")
        _require_own_lock(info, lock, path)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FileError(
                        f"cannot lock {KNOWN_WHAT} {path} ({lock}): another process has held "
                        f"it for {wait_s:g} s"
                    ) from None
                time.sleep(LOCK_POLL_S)
    except OSError as exc:
        os.close(fd)
        raise FileError(f"cannot lock {KNOWN_WHAT} {path} ({lock}): {exc.strerror}") from None
    except FileError:
        os.close(fd)
        raise


def remember_relay(
    path: Path, relay: str, key: bytes, *, lock_wait_s: float = LOCK_WAIT_S
) -> bytes | None:
    """Add a line for ``relay``'s key at the end of the file, which keeps its other lines
    as they were (comments too), mode 0600, and is written whole in place of the old
    one: through a link, in place of the file it names. (It was rewritten from the
    relays it listed, its comments lost, and a link replaced by a file: found by
    review.) Under a lock (``known_relays.lock`` beside it), so that two clients
    learning two relays at once both keep theirs. A key for ``relay`` written since
    the caller read the file (by another client, or by hand) is kept, and returned
    when it is another one. The lock is beside the file a link names, which every
    client writing it, through the link or not, takes (beside the link, two such
    clients kept 61 of 120 relays: found by review). Another process holding the lock
    for ``lock_wait_s`` makes it a :class:`FileError`: nothing is written."""
    try:
        make_private_directories(path.parent)
    except OSError as exc:
        raise FileError(
            f"cannot make the directory of {KNOWN_WHAT} {path}: {exc.strerror}"
        ) from None
    for _ in range(RETARGETS):
        target = Path(os.path.realpath(path))
        if not target.parent.is_dir():  # a dangling link's: not made here
            raise FileError(
                f"cannot write {KNOWN_WHAT} {path}: it leads to {target}, in no directory"
            )
        # Where it leads was trusted, not the way there: another user's link in /tmp
        # turned root's pins, and its lock, anywhere (found by review).
        require_trusted_directories(path, KNOWN_WHAT)
        fd = _lock(target, path, lock_wait_s)
        if Path(os.path.realpath(path)) == target:
            break
        os.close(fd)  # the link was turned meanwhile: lock where it leads now
    else:
        raise FileError(f"cannot write {KNOWN_WHAT} {path}: where it leads keeps changing")
    try:
        text, known = _read_known_relays(target)  # what is written (found by review)
        if relay in known:
            return None if known[relay] == key else known[relay]
        if text and not text.endswith("\n"):
            text += "\n"
        data = f"{text}{relay} {encode_key(key)}\n".encode()
        if len(data) > MAX_KNOWN_RELAYS_BYTES:  # the next read would refuse it whole
            raise FileError(
                f"{KNOWN_WHAT} {path} would be over {MAX_KNOWN_RELAYS_BYTES} bytes with "
                f"{relay}: not kept (remove lines it no longer needs)"
            )
        replace_private_file(target, data, what=KNOWN_WHAT)
        return None
    finally:
        os.close(fd)
