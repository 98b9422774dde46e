"""The CLI uses an API socket only where nobody but a trusted user could have put it."""

import errno
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from mcrelay.cli.status import ExitStatus
from mcrelay.cli.trust import UntrustedSocket, check_api_socket
from support import Console, assert_one_error_line, relay_config, running_daemon

ME = os.geteuid()
OTHER = 61234
"""A uid that is neither root nor us (only root can give files to it)."""
as_root = pytest.mark.skipif(ME != 0, reason="only root can give files to another user")


def make_socket(path: Path, mode: int = 0o660, owner: int | None = None) -> Path:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def directory(path: Path, mode: int = 0o755, owner: int | None = None) -> Path:
    path.mkdir()
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def refused(path: Path, why: str) -> None:
    with pytest.raises(UntrustedSocket, match=why):
        check_api_socket(path, ME)


def test_our_socket_in_our_directory_is_used(tmp_path: Path) -> None:
    check_api_socket(make_socket(directory(tmp_path / "run") / "api.sock"), ME)


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775, 0o757])
def test_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    """Anyone could bind the configured path there first and collect the token."""
    refused(make_socket(directory(tmp_path / "pub", mode) / "api.sock"), "writable by group")


def test_a_socket_others_may_write_is_refused(tmp_path: Path) -> None:
    refused(make_socket(directory(tmp_path / "run") / "api.sock", 0o662), "others may write")


def test_a_symbolic_link_or_a_file_is_refused(tmp_path: Path) -> None:
    run = directory(tmp_path / "run")
    target = make_socket(run / "real.sock")
    (run / "link.sock").symlink_to(target)
    refused(run / "link.sock", "symbolic link")
    (run / "file.sock").write_text("")
    refused(run / "file.sock", "not a socket")


def test_a_link_on_the_way_in_a_directory_others_write_is_refused(tmp_path: Path) -> None:
    run = directory(tmp_path / "run")
    make_socket(run / "api.sock")
    public = directory(tmp_path / "pub", 0o1777)
    (public / "link").symlink_to(run)
    refused(public / "link" / "api.sock", "symbolic link .* sits in a directory others can write")
    (run / "safe").symlink_to(run)
    check_api_socket(run / "safe" / "api.sock", ME)


def test_no_socket_says_whether_the_daemon_runs(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="is the daemon running"):
        check_api_socket(tmp_path / "api.sock", ME)


@as_root
def test_a_socket_of_another_user_in_our_directory_is_refused(tmp_path: Path) -> None:
    path = make_socket(directory(tmp_path / "run") / "api.sock", owner=OTHER)
    refused(path, f"belongs to uid {OTHER}")


@as_root
def test_a_service_users_socket_in_its_runtime_directory_is_used(tmp_path: Path) -> None:
    """systemd's DynamicUser= layout: /run (root) / mcrelay (the service) / api.sock."""
    run = directory(tmp_path / "mcrelay", 0o755, owner=OTHER)
    check_api_socket(make_socket(run / "api.sock", owner=OTHER), ME)


@as_root
def test_a_service_directory_inside_one_others_write_is_refused(tmp_path: Path) -> None:
    """Another user made 'mcrelay' in a public directory and bound the socket in it."""
    public = directory(tmp_path / "pub", 0o1777)
    run = directory(public / "mcrelay", 0o755, owner=OTHER)
    refused(make_socket(run / "api.sock", owner=OTHER), "not a directory only root or you")


async def test_the_cli_refuses_such_a_socket_with_one_line(tmp_path: Path) -> None:
    path = make_socket(directory(tmp_path / "pub", 0o1777) / "api.sock")
    console = Console()
    assert await console.run("status", "--api", f"unix:{path}") == ExitStatus.UNREACHABLE
    assert_one_error_line(console, str(path), "writable by group or others")


async def test_the_cli_and_the_daemon_meet_at_the_default_socket(
    tmp_path: Path, relay_key_file: Path
) -> None:
    environ = {"RUNTIME_DIRECTORY": str(tmp_path / "run")}
    config = relay_config(relay_key_file, api=f"unix:{tmp_path / 'run' / 'api.sock'}")
    async with running_daemon(config):
        assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700
        console = Console(environ=environ)
        assert await console.run("status") == ExitStatus.OK
        assert console.out_lines()[0].startswith("mcrelay ")


def connect_as(uid: int, path: Path) -> int:
    """In a child process running as ``uid``: 0 if it may use the socket, else the errno."""
    pid = os.fork()
    if pid == 0:  # the child: plain calls only, then _exit
        code = 0
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            check_api_socket(path, uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(path))
        except OSError as exc:
            code = exc.errno or 255
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory anyone may look into (pytest's own are 0700), owned by us."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as name:
        os.chmod(name, 0o755)
        yield Path(name)


@as_root
async def test_another_user_cannot_use_roots_daemon(
    relay_key_file: Path, open_directory: Path
) -> None:
    """The socket is 0660: root (and the daemon's group) may connect, nobody else."""
    path = open_directory / "api.sock"
    async with running_daemon(relay_config(relay_key_file, api=f"unix:{path}")):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
        assert await trio.to_thread.run_sync(connect_as, 0, path) == 0
        assert await trio.to_thread.run_sync(connect_as, 65534, path) == errno.EACCES
