"""May the CLI talk to the API socket at this path? It sends the bearer token there.

Whoever can create a file where the configured socket should be can listen there
first and receive the token, or answer with lies. So the socket is used only when
nobody but a trusted user could have put it there:

- it is a socket, not a symbolic link, and others may not write it;
- its directory is a directory that group and others may not write;
- the socket and its directory belong to root or to us; or both belong to one
  service user (systemd's ``RuntimeDirectory=`` for a ``DynamicUser=`` daemon) and
  that directory sits in one owned by root or us that group and others may not write;
- no symbolic link on the way sits in a directory that group or others may write.
"""

import os
import stat
from pathlib import Path

from mcrelay.cli.status import ApiUnreachable

GROUP_OR_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class UntrustedSocket(ApiUnreachable):
    """The API socket could have been put there by someone else (exits 3)."""


def check_api_socket(path: Path, uid: int) -> None:
    """Raise :class:`UntrustedSocket` (or ``ApiUnreachable`` when there is no socket)."""
    path = Path(os.path.abspath(path))
    _check_links(path.parent, uid, path)
    try:
        sock = path.lstat()
        directory = path.parent.stat()
    except FileNotFoundError:
        raise ApiUnreachable(f"no daemon API socket at {path}: is the daemon running?") from None
    except OSError as exc:
        raise ApiUnreachable(f"cannot look at the API socket {path}: {exc.strerror}") from None
    if stat.S_ISLNK(sock.st_mode):
        _refuse(path, "it is a symbolic link")
    if not stat.S_ISSOCK(sock.st_mode):
        _refuse(path, "it is not a socket")
    if sock.st_mode & stat.S_IWOTH:
        _refuse(path, "others may write to it")
    if directory.st_mode & GROUP_OR_OTHERS_WRITE:
        _refuse(path, f"its directory {path.parent} is writable by group or others")
    trusted = {0, uid}
    if sock.st_uid in trusted and directory.st_uid in trusted:
        return
    if sock.st_uid != directory.st_uid:
        _refuse(
            path, f"it belongs to uid {sock.st_uid}, neither you, root nor its directory's owner"
        )
    parent = path.parent.resolve().parent
    info = parent.stat()
    if info.st_uid not in trusted or info.st_mode & GROUP_OR_OTHERS_WRITE:
        _refuse(
            path,
            f"it and its directory belong to uid {sock.st_uid}, and {parent} is not a "
            "directory only root or you can write",
        )


def _check_links(directory: Path, uid: int, path: Path) -> None:
    """Every symbolic link on the way must sit in a directory only trusted users write."""
    current = Path(directory.anchor)
    for part in directory.parts[1:]:
        step = current / part
        try:
            is_link = step.is_symlink()
        except OSError:
            return  # the lookup that follows says what is missing
        if is_link:
            info = current.stat()
            if info.st_uid not in {0, uid} or info.st_mode & GROUP_OR_OTHERS_WRITE:
                _refuse(path, f"the symbolic link {step} sits in a directory others can write")
            current = step.resolve()
        else:
            current = step


def _refuse(path: Path, why: str) -> None:
    raise UntrustedSocket(
        f"refusing the API socket {path}: {why}, so someone else could have put it "
        "there to collect the token; use a socket in a directory only root or you can write"
    )
