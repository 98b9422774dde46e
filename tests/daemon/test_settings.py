"""Settings: precedence, the TOML file's checks, config check, and the example file."""

import os
import re
import tomllib
from pathlib import Path

import pytest

import mcrelay.settings.resolve as resolve_module
from mcrelay.cli.daemon import loader
from mcrelay.cli.main import build_parser
from mcrelay.cli.status import ExitStatus
from mcrelay.settings.resolve import SettingsError, config_file, read_file, read_token, resolve
from mcrelay.settings.table import SETTINGS, live_changes
from support import Console, assert_one_error_line

EXAMPLE = Path(__file__).parents[2] / "packaging" / "mcrelay.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mcrelay.toml"
    path.write_text(text)
    return path


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    path = write(
        tmp_path, "[network]\nport = 6001\ngroup = '239.1.1.1'\n[relay]\nclient_timeout = 9\n"
    )
    environ = {"MCRELAY_PORT": "6002", "MCRELAY_GROUP": "239.2.2.2"}
    resolved = resolve({"port": 6003}, environ, path)
    config = resolved.config
    assert (config.port, config.group, config.client_timeout_s) == (6003, "239.2.2.2", 9.0)
    assert config.reassembly_timeout_s == 5.0
    assert resolved.sources["port"] == "flag"
    assert resolved.sources["group"] == "env MCRELAY_GROUP"
    assert resolved.sources["client_timeout"] == f"file {path}"
    assert resolved.sources["reassembly_timeout"] == "default"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ("[relay]\nbogus = 1\n", "unknown key 'relay.bogus'"),
        ("[network]\nclient_timeout = 1\n", "'client_timeout' belongs in [relay], not [network]"),
        ("port = '5007'\n", "'port' must be an integer, not str"),
        ("client_timeout = true\n", "'client_timeout' must be a number, not bool"),
        ("port = 70000\n", "'port': '70000' is not a port number (an integer from 0 to 65535)"),
        ("group = '10.0.0.1'\n", "'group': '10.0.0.1' is not a multicast address"),
        ("log_level = 'loud'\n", "'log_level': 'loud' is not one of"),
        ("port = \n", "not valid TOML"),
        ("max_message_bytes = 40000\n", "max message bytes must be 1 to 32768"),
        # tomllib is quadratic in a dotted key's parts: 27 s and 6 GB (found by review).
        ("# x\n" + "x." * 40_000 + "x = 1\n", "line 2: more than 32 dots outside strings"),
        ("t = {" + "x." * 33 + "x = 1}\n", "line 1: more than 32 dots"),
        # A 200,000-character key was quoted whole: a line that long (found by review).
        ("k" * 200_000 + " = 1\n", "unknown key 'kkkkk"),
        ("[" + "s" * 200_000 + "]\nport = 1\n", "unknown key 'sssss"),
    ],
)
def test_bad_files_are_refused_with_file_key_and_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError, match=re.escape(message)) as refused:
        resolve({}, {}, path)
    assert len(str(refused.value)) < len(str(path)) + 200


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        read_file(tmp_path / "nope.toml")


@pytest.mark.parametrize("target", ["gone.toml", "loop.toml"])
def test_a_dangling_link_at_the_default_file_is_an_error_not_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """It was taken for no file: the daemon ran on the defaults (no authorized keys)."""
    link = tmp_path / "loop.toml"
    link.symlink_to(tmp_path / target)
    monkeypatch.setattr(resolve_module, "DEFAULT_CONFIG_FILE", link)
    assert config_file(None, {}) == link
    with pytest.raises(SettingsError, match="settings file"):
        read_file(link)


def test_a_default_file_that_cannot_be_looked_at_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/etc/mcrelay unsearchable by this user: an error, not the defaults."""

    def denied(path: object) -> os.stat_result:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "lstat", denied)
    with pytest.raises(SettingsError, match="cannot look at it: Permission denied"):
        config_file(None, {})


def test_a_non_loopback_api_needs_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="without a token"):
        resolve({}, {}, write(tmp_path, "[api]\napi = '0.0.0.0:7507'\n"))
    token = tmp_path / "token"
    token.write_text("abc123\n")
    token.chmod(0o600)
    text = f"[api]\napi = '0.0.0.0:7507'\napi_token_file = '{token}'\n"
    assert resolve({}, {}, write(tmp_path, text)).config.api_token == "abc123"


def test_live_changes_name_what_a_reload_applies(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc123\n")
    token.chmod(0o600)
    before = resolve({}, {}, write(tmp_path, f"api_token_file = '{token}'\n")).config
    text = f"api_token_file = '{token}'\nclient_timeout = 9\nport = 6001\nlog_level = 'debug'\n"
    after = resolve({}, {}, write(tmp_path, text)).config
    assert live_changes(before, after) == ["client_timeout", "log_level"]  # port needs a restart
    token.write_text("def456\n")
    assert live_changes(after, resolve({}, {}, tmp_path / "mcrelay.toml").config) == [
        "api_token_file"
    ]
    assert live_changes(after, after) == []


async def test_a_misspelt_variable_is_warned_of_not_silently_ignored(tmp_path: Path) -> None:
    """MCRELAY_AUTHORIZED_KEY (no S) left membership open without a word; a client
    command's variable (MCRELAY_RELAY) is no typo."""
    environ = {"MCRELAY_AUTHORIZED_KEY": "/etc/keys", "MCRELAY_RELAY": "10.0.0.1"}
    console = Console(environ=environ)
    assert await console.run("config", "check", "--key-file", str(tmp_path / "k.pem")) == 0
    assert console.err_lines() == [
        "mcrelay: warning: MCRELAY_AUTHORIZED_KEY is not a setting of mcrelay and is ignored "
        "(did you mean MCRELAY_AUTHORIZED_KEYS?)"
    ]


def test_the_example_file_names_every_setting_and_is_valid(tmp_path: Path) -> None:
    document = EXAMPLE.read_text()
    for setting in SETTINGS:
        assert f"{setting.name} = " in document, setting.name
    # A copy: the checkout's directories may be anyone's, which a settings file's may not.
    resolve({}, {}, write(tmp_path, document))


async def test_config_check_prints_values_and_sources(tmp_path: Path) -> None:
    path = write(tmp_path, "[relay]\nclient_timeout = 12\n")
    console = Console(environ={"MCRELAY_PORT": "6000"})
    assert await console.run("config", "check", "--config", str(path)) == ExitStatus.OK
    lines = console.out_lines()
    assert f"client_timeout = 12.0  # file {path}" in lines
    assert "port = 6000  # env MCRELAY_PORT" in lines
    assert 'group = "224.1.1.1"  # default' in lines
    bad = Console()
    path.write_text("port = 'x'\n")
    assert await bad.run("config", "check", "--config", str(path)) == ExitStatus.USAGE
    assert bad.stderr.getvalue().count("\n") == 1


def test_a_key_set_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=re.escape("'network.port' is set twice")):
        resolve({}, {}, write(tmp_path, "port = 1\n[network]\nport = 2\n"))


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("group", "is not an IPv4 address"),
        ("interface", "is not an IPv4 address"),
        ("api", "is not host:port, unix:/path or off"),
        ("federation", "is not a NATS URL"),
        ("profiles", "is not a profile"),
        ("relay_name", "is not a name"),
        ("log_level", "is not one of"),
    ],
)
def test_an_error_quotes_a_huge_value_cut_short(tmp_path: Path, key: str, says: str) -> None:
    """A 250 KB value was a 250 KB error line, at start and at each reload (found by
    review)."""
    path = write(tmp_path, f"{key} = '{'A' * 250_000}'\n")
    with pytest.raises(SettingsError) as caught:
        resolve({}, {}, path)
    message = str(caught.value)
    assert f"'{'A' * 80}'... (250000 characters)" in message
    assert says in message
    assert len(message) < 400


def test_range_errors_name_their_source_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "max_reassembly_bytes = 100\n")
    with pytest.raises(SettingsError, match=re.escape(f"file {path}: 'max_reassembly_bytes'")):
        resolve({}, {}, path)
    with pytest.raises(SettingsError, match="env MCRELAY_MAX_MESSAGE_BYTES: 'max_message_bytes'"):
        resolve({}, {"MCRELAY_MAX_MESSAGE_BYTES": "99999"}, None)


def test_an_error_across_settings_names_each_and_where_it_came_from(tmp_path: Path) -> None:
    """Only the setting the check was on was named, a default, while the file had set
    the other (found by review)."""
    path = write(tmp_path, "[api]\napi_max_connections = 50\n")
    expected = f"default: 'api_max_event_subscribers', file {path}: 'api_max_connections': "
    with pytest.raises(SettingsError, match=re.escape(expected)):
        resolve({}, {}, path)


async def test_config_check_prints_valid_toml_and_takes_the_daemons_flags(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / 'a"b.pem'
    console = Console()
    argv = ["config", "check", "--key-file", str(key_file), "--api", "unix:/run/x.sock"]
    assert await console.run(*argv) == ExitStatus.OK
    document = tomllib.loads("\n".join(console.out_lines()))
    assert document["key_file"] == str(key_file)
    assert document["api"] == "unix:/run/x.sock"


def token_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_token_file_others_may_access_is_refused_as_a_key_file_is(
    tmp_path: Path, mode: int
) -> None:
    path = token_file(tmp_path, b"abc123\n", mode)
    with pytest.raises(SettingsError, match=re.escape(f"chmod 600 {path}")):
        read_token(path)


@pytest.mark.parametrize(
    "data", ["tökén\n".encode(), b"\xff\xfe\n", b"two words\n", b"\n", b"a\x00b\n", b"x" * 5000]
)
def test_a_token_a_header_cannot_carry_is_refused_at_start(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(SettingsError, match="API token file"):
        read_token(token_file(tmp_path, data))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")
async def test_a_token_file_someone_else_owns_is_refused_by_the_daemon_not_by_check(
    tmp_path: Path,
) -> None:
    """Someone who put the file where the daemon reads it knows the token (a mode check
    alone took it; found by review)."""
    path = token_file(tmp_path, b"abc123\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(SettingsError, match="belongs to uid 65534"):
        read_token(path)
    argv = ["--key-file", str(tmp_path / "k.pem"), "--api-token-file", str(path)]
    console = Console()
    assert await console.run("config", "check", "--api", "127.0.0.1:7507", *argv) == 0


def test_a_token_is_one_line_of_printable_ascii(tmp_path: Path) -> None:
    assert read_token(token_file(tmp_path, b"  Zm9v.Y-mF_y~!\r\n")) == "Zm9v.Y-mF_y~!"


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "huge"])
def test_settings_and_token_files_must_be_regular_files_of_bounded_size(
    tmp_path: Path, kind: str
) -> None:
    """A FIFO hung the relay on reload, /dev/zero hung 'config check': both are refused."""
    path = tmp_path / "file"
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"#" * (2 * 1024 * 1024))
        path.chmod(0o600)
    with pytest.raises(SettingsError, match=str(path)):
        read_file(path)
    with pytest.raises(SettingsError, match=str(path)):
        read_token(path)


async def test_config_check_refuses_a_device_for_settings_file_at_once() -> None:
    console = Console()
    assert await console.run("config", "check", "--config", "/dev/zero") == ExitStatus.USAGE
    assert_one_error_line(console, "/dev/zero", "not a regular file")


def test_a_yes_or_no_setting_from_flag_env_and_file(tmp_path: Path) -> None:
    tcp = "[api]\napi = '127.0.0.1:7507'\n"
    with pytest.raises(SettingsError, match="every local user"):
        resolve({}, {}, write(tmp_path, tcp))
    chosen = resolve({}, {}, write(tmp_path, tcp + "api_tcp_without_token = true\n"))
    assert chosen.config.api_tcp_without_token
    for word in ("yes", "1", "On", "TRUE"):
        environ = {"MCRELAY_API_TCP_WITHOUT_TOKEN": word}
        assert resolve({}, environ, write(tmp_path, tcp)).config.api_tcp_without_token
    assert resolve({"api_tcp_without_token": True}, {}, write(tmp_path, tcp)).config.api
    with pytest.raises(SettingsError, match="must be true or false, not str"):
        resolve({}, {}, write(tmp_path, tcp + "api_tcp_without_token = 'yes'\n"))
    with pytest.raises(SettingsError, match="MCRELAY_API_TCP_WITHOUT_TOKEN: 'maybe'"):
        resolve({}, {"MCRELAY_API_TCP_WITHOUT_TOKEN": "maybe"}, None)
    with pytest.raises(SettingsError, match="must be an integer, not bool"):
        resolve({}, {}, write(tmp_path, "port = true\n"))


async def test_config_check_shows_yes_or_no_as_toml(tmp_path: Path) -> None:
    console = Console(environ={"RUNTIME_DIRECTORY": str(tmp_path)})
    assert await console.run("config", "check", "--api-tcp-without-token") == ExitStatus.OK
    assert "api_tcp_without_token = true  # flag" in console.out_lines()
    assert f'api = "unix:{tmp_path}/api.sock"  # default' in console.out_lines()


def test_a_settings_file_others_could_change_is_refused(tmp_path: Path) -> None:
    """It names the authorized keys, the API and its token, and was read whatever its
    mode and directory, where the authorized keys it names were not (found by review)."""
    path = write(tmp_path, "[relay]\nclient_timeout = 12\n")
    path.chmod(0o666)
    with pytest.raises(SettingsError, match=re.escape(f"chmod go-w {path}")):
        read_file(path)
    path.chmod(0o644)
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(SettingsError, match=re.escape(f"chmod go-w {tmp_path}")):
            read_file(path)
    finally:
        tmp_path.chmod(0o755)
    assert read_file(path) == {"client_timeout": 12.0}


async def test_config_check_refuses_the_key_files_the_daemon_would(tmp_path: Path) -> None:
    """It read no key file: a corrupt or shared key passed the check, and the daemon then
    exited 2, which the unit does not restart (found by review)."""
    key_file = tmp_path / "relay-key.pem"
    argv = ["config", "check", "--key-file", str(key_file)]
    assert await Console().run(*argv) == ExitStatus.OK  # none yet: made at start
    key_file.write_text("not a key\n")
    key_file.chmod(0o600)
    console = Console()
    assert await console.run(*argv) == ExitStatus.USAGE
    assert_one_error_line(console, f"key file {key_file}")
    key_file.unlink()
    secure = tmp_path / "relay-secure.key"
    secure.write_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
    secure.chmod(0o644)
    console = Console()
    assert await console.run(*argv) == ExitStatus.USAGE
    assert_one_error_line(console, f"secure key file {secure} has mode 0644")


def test_a_default_settings_file_made_after_the_start_is_read_on_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was chosen once, at start: one made later was never read, and a reload
    said 'no setting changed' (found by review)."""
    default = tmp_path / "mcrelay.toml"
    monkeypatch.setattr(resolve_module, "DEFAULT_CONFIG_FILE", default)
    console = Console()
    args = build_parser(console.env).parse_args(["daemon", "--key-file", str(tmp_path / "k")])
    load = loader(args, console.env)
    assert load().client_timeout_s == 30.0
    write(tmp_path, "[relay]\nclient_timeout = 12\n")
    assert load().client_timeout_s == 12.0
    default.unlink()  # once read, it is required: gone is an error, not the defaults
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load()


def test_a_settings_file_may_begin_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Some editors write one: it was 'Invalid statement (at line 1, column 1)'."""
    path = tmp_path / "mcrelay.toml"
    path.write_bytes(b"\xef\xbb\xbf[relay]\nclient_timeout = 12\n")
    assert read_file(path) == {"client_timeout": 12.0}


def test_a_relative_path_in_the_settings_file_is_from_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was from the working directory: the file meant one thing to config check run
    beside it and another to the daemon run from / (found by review)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "mcrelay.toml"
    path.write_text(
        "key_file = 'relay-key.pem'\n[secure]\nauthorized_keys = 'keys/ak'\n"
        "[api]\napi = 'unix:run/api.sock'\n"
    )
    monkeypatch.chdir("/")
    assert read_file(path) == {
        "key_file": etc / "relay-key.pem",
        "authorized_keys": etc / "keys" / "ak",
        "api": f"unix:{etc / 'run' / 'api.sock'}",
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
async def test_config_check_says_when_a_key_is_not_its_directorys_owners(tmp_path: Path) -> None:
    """'sudo mcrelay keygen' into the daemon's state directory made a key the daemon could
    not read: config check passed it, the daemon exited 2 (found by review)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key_file = state / "relay-key.pem"
    assert await Console().run("keygen", str(key_file)) == ExitStatus.OK
    os.chown(state, 61000, 61000)
    console = Console()
    assert await console.run("config", "check", "--key-file", str(key_file)) == ExitStatus.OK
    assert console.err_lines() == [
        f"mcrelay: warning: {key_file} belongs to uid 0, its directory to uid 61000: if "
        "the daemon runs as its directory's owner (systemd's StateDirectory), it cannot "
        "read the key"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user takes root")
async def test_config_check_as_root_says_a_settings_file_another_uid_owns(
    tmp_path: Path,
) -> None:
    """Root's check asks only the modes, and passed a file the daemon refuses unless it
    runs as its owner (found by review): said."""
    path = write(tmp_path, "[relay]\nclient_timeout = 12\n")
    os.chown(path, 61000, 61000)
    console = Console()
    argv = ["config", "check", "--config", str(path), "--key-file", str(tmp_path / "k")]
    assert await console.run(*argv) == ExitStatus.OK
    assert console.err_lines() == [
        f"mcrelay: warning: {path} belongs to uid 61000: the daemon takes it only if it "
        "runs as uid 61000"
    ]
