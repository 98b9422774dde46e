"""Where the control API listens: loopback TCP, a Unix socket, or nowhere; health checks."""

import os
import re
import socket
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from api_support import api_client, assert_json_error

from mcrelay.api import server
from mcrelay.api.app import create_app
from mcrelay.api.context import ApiContext
from mcrelay.api.errors import ApiBindError
from mcrelay.api.server import open_api_socket
from mcrelay.settings.address import (
    MAX_SOCKET_PATH_BYTES,
    ApiAddress,
    default_api_socket,
    parse_api_address,
)
from mcrelay.settings.config import ConfigValueError, RelayConfig
from mcrelay.settings.resolve import resolve
from support import LOOPBACK, relay_config, running_daemon


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


async def test_loopback_port_zero_serves_health_and_readiness(relay_key_file: Path) -> None:
    async with running_daemon(relay_config(relay_key_file, api="127.0.0.1:0")) as daemon:
        (url,) = daemon.api_urls
        assert url.startswith(f"http://{LOOPBACK}:")
        assert int(url.rsplit(":", 1)[1]) > 0
        assert daemon.api.ready
        async with api_client(daemon) as http:
            healthz = await http.get("/healthz")
            assert healthz.status_code == 200
            assert healthz.json() == {"status": "ok"}
            readyz = await http.get("/readyz")
            assert readyz.status_code == 200
            assert readyz.json() == {"status": "ready"}
            status = await http.get("/v1/status")
            assert status.status_code == 200


@pytest.mark.parametrize("api", [None, "off"])
async def test_api_off_listens_nowhere(relay_key_file: Path, api: str | None) -> None:
    config = relay_config(relay_key_file) if api is None else relay_config(relay_key_file, api=api)
    assert config.api_address is None
    async with running_daemon(config) as daemon:
        assert daemon.api_urls == []
        assert daemon.api.ready
        assert daemon.relay.address[1] > 0


async def test_unix_socket_is_mode_0660_and_removed_on_exit(
    relay_key_file: Path, tmp_path: Path
) -> None:
    path = tmp_path / "api.sock"
    umask_before = current_umask()
    async with running_daemon(relay_config(relay_key_file, api=f"unix:{path}")) as daemon:
        (url,) = daemon.api_urls
        assert url == f"http://unix:{path}"
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660
        assert current_umask() == umask_before
        async with api_client(daemon) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/readyz")).status_code == 200
            status = await http.get("/v1/status")
            assert status.json()["fingerprint"] == daemon.relay.fingerprint
    assert not path.exists()


async def test_stale_unix_socket_is_replaced(relay_key_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a listener that died without removing its socket file
    assert stat.S_ISSOCK(path.lstat().st_mode)
    async with running_daemon(relay_config(relay_key_file, api=f"unix:{path}")) as daemon:
        assert stat.S_IMODE(path.lstat().st_mode) == 0o660
        async with api_client(daemon) as http:
            assert (await http.get("/healthz")).status_code == 200
    assert not path.exists()


async def test_live_unix_listener_is_not_replaced(relay_key_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen(1)
        config = relay_config(relay_key_file, api=f"unix:{path}")
        with pytest.RaisesGroup(
            pytest.RaisesExc(ApiBindError, match="another process is listening"),
            flatten_subgroups=True,
        ):
            async with running_daemon(config):
                pass  # pragma: no cover
        # The other listener keeps its socket file and still takes connections.
        assert stat.S_ISSOCK(path.lstat().st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))


async def test_a_stop_leaves_another_daemons_socket_at_its_path(
    relay_key_file: Path, tmp_path: Path
) -> None:
    """Its socket file removed, and another daemon's bound at the path: the stop of the
    first removed the second's (found by review)."""
    path = tmp_path / "api.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        async with running_daemon(relay_config(relay_key_file, api=f"unix:{path}")):
            path.unlink()
            other.bind(str(path))
            other.listen(1)
        assert stat.S_ISSOCK(path.lstat().st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))


def test_a_stale_socket_replaced_while_probed_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stale socket found, probed, then replaced by another daemon's before it is
    removed: the other's is left, and this start refused."""
    path = tmp_path / "api.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    class Probe(socket.socket):
        def connect(self, address: Any) -> None:
            try:
                super().connect(address)
            finally:  # refused: the other daemon takes the path now
                path.unlink()
                live.bind(str(path))
                live.listen(1)

    names = SimpleNamespace(socket=Probe, AF_UNIX=socket.AF_UNIX, SOCK_STREAM=socket.SOCK_STREAM)
    monkeypatch.setattr(server, "socket", names)
    with live:
        with pytest.raises(ApiBindError, match="in use"):
            open_api_socket(ApiAddress(path=path))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))


async def test_regular_file_at_the_socket_path_is_refused(
    relay_key_file: Path, tmp_path: Path
) -> None:
    path = tmp_path / "api.sock"
    path.write_text("not a socket\n")
    config = relay_config(relay_key_file, api=f"unix:{path}")
    with pytest.RaisesGroup(
        pytest.RaisesExc(ApiBindError, match="not a socket"), flatten_subgroups=True
    ):
        async with running_daemon(config):
            pass  # pragma: no cover
    assert path.read_text() == "not a socket\n"


async def test_tcp_port_in_use_fails_with_api_bind_error(relay_key_file: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = relay_config(relay_key_file, api=f"{LOOPBACK}:{port}")
        with pytest.RaisesGroup(
            pytest.RaisesExc(ApiBindError, match=f"{LOOPBACK}:{port}"), flatten_subgroups=True
        ):
            async with running_daemon(config):
                pass  # pragma: no cover


@pytest.mark.parametrize("api", ["0.0.0.0:0", "[::]:0", "192.0.2.7:7507", "[2001:db8::1]:80"])
def test_non_loopback_address_needs_a_token(relay_key_file: Path, api: str) -> None:
    with pytest.raises(ValueError, match="token"):
        relay_config(relay_key_file, api=api)
    with pytest.raises(ValueError, match="token"):
        relay_config(relay_key_file, api=api, api_token="")
    config = relay_config(relay_key_file, api=api, api_token="s3cret")
    address = config.api_address
    assert address is not None
    assert not address.is_loopback


@pytest.mark.parametrize("api", ["127.0.0.1:0", "127.8.9.10:7507", "[::1]:0"])
def test_loopback_tcp_without_a_token_is_only_an_explicit_choice(
    relay_key_file: Path, api: str
) -> None:
    """Loopback is no access boundary on a shared host: every local user could post,
    kick and ban through a tokenless TCP API."""
    with pytest.raises(ValueError, match="every local user could administer"):
        relay_config(relay_key_file, api=api, api_tcp_without_token=False)
    address = relay_config(relay_key_file, api=api, api_tcp_without_token=True).api_address
    assert address is not None
    assert address.is_loopback
    assert relay_config(relay_key_file, api=api, api_token="s3cret").api_token == "s3cret"


def test_a_unix_socket_needs_no_token(relay_key_file: Path) -> None:
    config = relay_config(relay_key_file, api="unix:/run/x.sock", api_tcp_without_token=False)
    assert config.api_address == ApiAddress(path=Path("/run/x.sock"))


@pytest.mark.parametrize(
    ("environ", "euid", "expected"),
    [
        ({"RUNTIME_DIRECTORY": "/run/mcrelay:/run/other"}, 61234, "/run/mcrelay/api.sock"),
        ({"XDG_RUNTIME_DIR": "/run/user/1000"}, 0, "/run/mcrelay/api.sock"),
        ({"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000, "/run/user/1000/mcrelay/api.sock"),
        ({"XDG_STATE_HOME": "/home/u/.st"}, 1000, "/home/u/.st/mcrelay/api.sock"),
    ],
)
def test_the_default_api_is_a_socket_in_a_directory_of_the_users_own(
    environ: dict[str, str], euid: int, expected: str
) -> None:
    assert default_api_socket(environ, euid) == Path(expected)


def test_the_command_serves_the_api_on_the_default_socket(tmp_path: Path) -> None:
    environ = {"RUNTIME_DIRECTORY": str(tmp_path)}
    config = resolve({}, environ, None).config
    assert config.api_address == ApiAddress(path=tmp_path / "api.sock")
    assert not config.api_tcp_without_token


@pytest.mark.parametrize(
    "api",
    [
        "localhost:7507",
        "127.0.0.1",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "unix:",
        "",
        "on",
        "127.0.0.1:\u00b2",  # isdigit() takes it, int() does not
        "127.0.0.1:\u0667\u0665\u0660\u0667",  # Arabic-Indic 7507, once taken as 7507
    ],
)
def test_bad_api_addresses_are_refused(relay_key_file: Path, api: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        relay_config(relay_key_file, api=api)


@pytest.mark.parametrize(
    ("api", "says"),
    [
        ("unix:/run/mcrelay/", "names a directory: give the socket's own path"),
        (f"unix:/{'d' * 60}/{'s' * 60}.sock", "is 107 bytes at most (the system's limit)"),
        (f"unix:/{'é' * 53}x", "this one 108"),  # bytes, not characters
    ],
)
def test_a_socket_path_bind_would_refuse_is_a_bad_setting(
    relay_key_file: Path, api: str, says: str
) -> None:
    """They passed config check, then the daemon exited 1, which the unit restarts on
    (found by review)."""
    with pytest.raises(ConfigValueError, match=re.escape(says)) as caught:
        relay_config(relay_key_file, api=api)
    assert caught.value.field == "api"


def test_the_longest_socket_path_is_bound(tmp_path: Path) -> None:
    path = tmp_path / ("s" * (MAX_SOCKET_PATH_BYTES - len(str(tmp_path)) - 1))
    assert parse_api_address(f"unix:{path}") == ApiAddress(path=path)
    open_api_socket(ApiAddress(path=path)).close()


def test_api_address_forms() -> None:
    assert parse_api_address("off") is None
    assert parse_api_address("127.0.0.1:0") == ApiAddress(host="127.0.0.1", port=0)
    assert parse_api_address("[::1]:7507") == ApiAddress(host="::1", port=7507)
    assert parse_api_address("unix:/run/a b.sock") == ApiAddress(path=Path("/run/a b.sock"))
    assert str(ApiAddress(host="::1", port=1)) == "[::1]:1"
    assert str(ApiAddress(path=Path("/x.sock"))) == "unix:/x.sock"
    assert RelayConfig().api == "off"


async def test_readyz_is_503_until_the_relay_serves(relay_key_file: Path) -> None:
    async with running_daemon(relay_config(relay_key_file)) as daemon:
        context = ApiContext(daemon.relay)
        client = create_app(context).test_client()
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        body = await not_ready.get_json()
        assert body["error"]["code"] == "not_ready"
        assert (await client.get("/healthz")).status_code == 200
        context.ready = True
        assert (await client.get("/readyz")).status_code == 200


async def test_status_over_the_unix_socket_with_a_token(
    relay_key_file: Path, tmp_path: Path
) -> None:
    path = tmp_path / "api.sock"
    config = relay_config(relay_key_file, api=f"unix:{path}", api_token="s3cret")
    async with running_daemon(config) as daemon:
        async with api_client(daemon) as anonymous:
            assert_json_error(await anonymous.get("/v1/status"), 401, "unauthorized")
            assert (await anonymous.get("/healthz")).status_code == 200
        async with api_client(daemon, "s3cret") as http:
            assert (await http.get("/v1/status")).status_code == 200


async def test_a_failed_start_leaves_no_socket_file(relay_key_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((LOOPBACK, 0))  # the relay's port is taken: binding it fails
        config = RelayConfig(
            port=holder.getsockname()[1],
            interface=LOOPBACK,
            key_file=relay_key_file,
            api=f"unix:{path}",
        )
        with pytest.RaisesGroup(OSError, flatten_subgroups=True):
            async with running_daemon(config):
                pass  # pragma: no cover
    assert not path.exists()


def test_a_socket_under_a_file_says_the_file_is_no_directory(tmp_path: Path) -> None:
    """'unix:/dev/null/a.sock' said 'File exists' (found by review)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ApiBindError, match=f"{blocker} is not a directory$"):
        open_api_socket(ApiAddress(path=blocker / "api.sock"))
