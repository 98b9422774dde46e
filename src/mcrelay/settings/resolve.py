"""Every daemon setting in one table, and where each value comes from.

Precedence: command-line flag > ``MCRELAY_<NAME>`` environment variable > the
TOML file > the default. The same table makes the flags, reads the environment
and the file, feeds ``mcrelay config check`` and says what a reload may change.
"""

import errno
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mcrelay.files import FileError, read_regular_file, read_token_file
from mcrelay.logs import LOG_FORMATS
from mcrelay.protocol.legacy import MAX_MESSAGE_BYTES
from mcrelay.settings import config as defaults
from mcrelay.settings.address import default_api, parse_api_address
from mcrelay.settings.config import ConfigValueError, RelayConfig

DEFAULT_CONFIG_FILE = Path("/etc/mcrelay/mcrelay.toml")
MAX_SETTINGS_FILE_BYTES = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
SECTIONS = ("network", "relay", "limits", "api", "log")


class SettingsError(ValueError):
    """A setting from a flag, the environment or the file is wrong; the message says where."""


# Plain ASCII decimal only: int() and float() also take '1_000', spaces, fullwidth
# digits, 'inf' and 'nan', and their errors ("invalid literal for int()") say nothing useful.
_INTEGER = re.compile(r"[0-9]{1,30}")
_DECIMAL = re.compile(r"(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?")
"""A TOML float reaches the converter as Python writes it, so an exponent is allowed."""


def port(text: str) -> int:
    if not _INTEGER.fullmatch(text) or int(text) > 0xFFFF:
        raise ValueError(f"{text!r} is not a port number (an integer from 0 to 65535)")
    return int(text)


def positive_float(text: str) -> float:
    if not _DECIMAL.fullmatch(text) or not 0 < float(text) < float("inf"):
        raise ValueError(f"{text!r} is not a positive number (such as 30 or 0.5)")
    return float(text)


def positive_int(text: str) -> int:
    if not _INTEGER.fullmatch(text) or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive integer (such as 8)")
    return int(text)


def ipv4_address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def multicast_group(text: str) -> str:
    address = ipv4_address(text)
    if not ipaddress.IPv4Address(address).is_multicast:
        raise ValueError(f"{text!r} is not a multicast address (224.0.0.0/4)")
    return address


def api_address(text: str) -> str:
    parse_api_address(text)
    return text


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def boolean(text: str) -> bool:
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r} is not true or false (nor yes, no, on, off, 1, 0)")


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text.lower()

    return convert


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    """The TOML key, and the flag without ``--`` (dashes for underscores)."""
    field: str
    """The RelayConfig field it sets."""
    convert: Callable[[str], Any]
    toml: type
    """The TOML value type accepted: str, int, float (an int is a float too) or bool.
    A bool setting's flag takes no value: giving it means true."""
    section: str
    live: bool
    """A reload (SIGHUP) applies it; otherwise it needs a restart."""
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "MCRELAY_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("group", "group", multicast_group, str, "network", False, "multicast group"),
    Setting("port", "port", port, int, "network", False, "UDP port"),
    Setting(
        "interface",
        "interface",
        ipv4_address,
        str,
        "network",
        False,
        "address of the interface that joins the group",
    ),
    Setting(
        "key_file",
        "key_file",
        Path,
        str,
        "relay",
        False,
        "relay private key, created 0600 if missing",
    ),
    Setting(
        "client_timeout",
        "client_timeout_s",
        positive_float,
        float,
        "relay",
        True,
        "seconds of silence before a client is removed",
    ),
    Setting(
        "reassembly_timeout",
        "reassembly_timeout_s",
        positive_float,
        float,
        "relay",
        True,
        "seconds a message may take to arrive whole",
    ),
    Setting(
        "max_message_bytes",
        "max_message_bytes",
        positive_int,
        int,
        "relay",
        True,
        f"largest plaintext relayed (at most {MAX_MESSAGE_BYTES})",
    ),
    Setting(
        "crypto_workers", "crypto_workers", positive_int, int, "relay", True, "threads doing RSA"
    ),
    Setting(
        "max_clients",
        "max_clients",
        positive_int,
        int,
        "limits",
        True,
        "registered clients at most",
    ),
    Setting(
        "max_clients_per_host",
        "max_clients_per_host",
        positive_int,
        int,
        "limits",
        True,
        "registered clients from one IP address at most",
    ),
    Setting(
        "max_messages_per_source",
        "max_messages_per_source",
        positive_int,
        int,
        "limits",
        True,
        "messages in reassembly per client",
    ),
    Setting(
        "max_reassembly_bytes",
        "max_reassembly_bytes",
        positive_int,
        int,
        "limits",
        True,
        "bytes in reassembly in total",
    ),
    Setting(
        "max_pending_relays",
        "max_pending_relays",
        positive_int,
        int,
        "limits",
        True,
        "completed messages waiting for crypto",
    ),
    Setting(
        "receive_buffer_bytes",
        "receive_buffer_bytes",
        positive_int,
        int,
        "limits",
        False,
        "socket receive buffer asked for",
    ),
    Setting(
        "key_answers_per_source_burst",
        "key_answers_per_source_burst",
        positive_int,
        int,
        "limits",
        True,
        "key-request answers a source may get at once",
    ),
    Setting(
        "key_answers_per_source_per_s",
        "key_answers_per_source_per_s",
        positive_float,
        float,
        "limits",
        True,
        "key-request answers a source earns per second",
    ),
    Setting(
        "key_answers_total_burst",
        "key_answers_total_burst",
        positive_int,
        int,
        "limits",
        True,
        "key-request answers at once, all sources together",
    ),
    Setting(
        "key_answers_total_per_s",
        "key_answers_total_per_s",
        positive_float,
        float,
        "limits",
        True,
        "key-request answers per second, all sources together",
    ),
    Setting(
        "registrations_per_host_burst",
        "registrations_per_host_burst",
        positive_int,
        int,
        "limits",
        True,
        "registrations and re-keys one host may make at once",
    ),
    Setting(
        "registrations_per_host_per_s",
        "registrations_per_host_per_s",
        positive_float,
        float,
        "limits",
        True,
        "registrations and re-keys one host earns per second",
    ),
    Setting(
        "registrations_total_burst",
        "registrations_total_burst",
        positive_int,
        int,
        "limits",
        True,
        "registrations and re-keys at once, all hosts together",
    ),
    Setting(
        "registrations_total_per_s",
        "registrations_total_per_s",
        positive_float,
        float,
        "limits",
        True,
        "registrations and re-keys per second, all hosts together",
    ),
    Setting(
        "api", "api", api_address, str, "api", False, "control API: host:port, unix:/path or off"
    ),
    Setting(
        "api_tcp_without_token",
        "api_tcp_without_token",
        boolean,
        bool,
        "api",
        False,
        "serve a loopback TCP API with no token: every local user may then administer the relay",
    ),
    Setting(
        "api_token_file",
        "api_token_file",
        Path,
        str,
        "api",
        True,
        "file holding the API's bearer token",
    ),
    Setting(
        "api_max_connections",
        "api_max_connections",
        positive_int,
        int,
        "api",
        True,
        "open API connections at most; more are refused with a 503",
    ),
    Setting(
        "api_max_event_subscribers",
        "api_max_event_subscribers",
        positive_int,
        int,
        "api",
        True,
        "open event streams (/v1/events) at most, below api_max_connections",
    ),
    Setting(
        "log_level",
        "log_level",
        one_of(LOG_LEVELS),
        str,
        "log",
        True,
        "debug, info, warning or error",
    ),
    Setting(
        "log_format",
        "log_format",
        one_of(LOG_FORMATS),
        str,
        "log",
        False,
        "auto (journal under systemd, else human), human, journal or json",
    ),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}


def cli_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Where the command's defaults differ from RelayConfig's (a library user opts in to
    the API): the command serves it on a Unix socket only its own user (or, under
    systemd, root and the unit's group) may use."""
    return {"api": default_api(environ)}


@dataclass(frozen=True, slots=True)
class Resolved:
    config: RelayConfig
    sources: dict[str, str]
    """For each setting name: 'flag', 'env MCRELAY_X', 'file PATH' or 'default'."""


def config_file(explicit: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file to read: ``--config``, else ``MCRELAY_CONFIG``, else the default if it exists."""
    if explicit is not None:
        return explicit
    if environ.get("MCRELAY_CONFIG"):
        return Path(environ["MCRELAY_CONFIG"])
    try:
        return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None
    except OSError as exc:
        raise SettingsError(f"{DEFAULT_CONFIG_FILE}: cannot look at it: {exc.strerror}") from None


def read_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file, checked key by key; ``SettingsError`` names file and key."""
    try:
        contents = read_regular_file(path, what="settings file", limit=MAX_SETTINGS_FILE_BYTES)
    except FileError as exc:
        raise SettingsError(str(exc)) from None
    if contents is None:
        raise SettingsError(f"cannot read settings file {path}: {os.strerror(errno.ENOENT)}")
    try:
        document = tomllib.loads(contents.data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise SettingsError(f"{path}: not valid TOML: nested too deeply") from None
    values: dict[str, Any] = {}
    for key, value in document.items():
        entries: list[tuple[str, str, Any, str | None]]
        if isinstance(value, dict) and key in SECTIONS:
            entries = [
                (inner, f"{key}.{inner}", inner_value, key) for inner, inner_value in value.items()
            ]
        else:
            entries = [(key, key, value, None)]
        for name, where, item, section in entries:
            if name in values:
                raise SettingsError(f"{path}: '{where}' is set twice")
            values[name] = _file_value(path, where, name, item, section)
    return values


def _file_value(path: Path, where: str, key: str, value: Any, section: str | None) -> Any:
    setting = BY_NAME.get(key)
    if setting is None:
        raise SettingsError(f"{path}: unknown key '{where}'")
    if section is not None and section != setting.section:
        raise SettingsError(f"{path}: '{key}' belongs in [{setting.section}], not [{section}]")
    accepted = (int, float) if setting.toml is float else (setting.toml,)
    if isinstance(value, bool) != (setting.toml is bool) or not isinstance(value, accepted):
        wanted = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        raise SettingsError(
            f"{path}: '{where}' must be {wanted[setting.toml]}, not {type(value).__name__}"
        )
    if setting.toml is bool:
        return value
    try:
        return setting.convert(str(value))
    except ValueError as exc:
        raise SettingsError(f"{path}: '{where}': {exc}") from None


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str], path: Path | None) -> Resolved:
    """The effective configuration, and where each value came from."""
    from_file = read_file(path) if path is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    command_defaults = cli_defaults(environ)
    for setting in SETTINGS:
        if flags.get(setting.name) is not None:
            values[setting.field], sources[setting.name] = flags[setting.name], "flag"
        elif setting.env in environ:
            try:
                values[setting.field] = setting.convert(environ[setting.env])
            except ValueError as exc:
                raise SettingsError(f"{setting.env}: {exc}") from None
            sources[setting.name] = f"env {setting.env}"
        elif setting.name in from_file:
            values[setting.field], sources[setting.name] = from_file[setting.name], f"file {path}"
        elif setting.name in command_defaults:
            values[setting.field] = command_defaults[setting.name]
            sources[setting.name] = "default"
        else:
            sources[setting.name] = "default"
    if values.get("key_file") is None:
        values["key_file"] = defaults.default_key_file(dict(environ))
    token_file = values.get("api_token_file")
    values["api_token"] = read_token(token_file) if token_file is not None else None
    try:
        return Resolved(RelayConfig(**values), sources)
    except ConfigValueError as exc:
        name = next((s.name for s in SETTINGS if s.field == exc.field), exc.field)
        raise SettingsError(f"{sources.get(name, 'default')}: '{name}': {exc}") from None
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def read_token(path: Path) -> str:
    try:
        return read_token_file(path)
    except FileError as exc:
        raise SettingsError(str(exc)) from None


def describe(resolved: Resolved) -> list[str]:
    """``name = value  # source`` lines (valid TOML), as ``mcrelay config check`` prints them."""
    config = resolved.config
    shown = {f.name: getattr(config, f.name) for f in fields(config)}
    lines = []
    for setting in SETTINGS:
        value = shown[setting.field]
        source = resolved.sources[setting.name]
        if value is None:
            lines.append(f"# {setting.name} is not set  # {source}")
        elif isinstance(value, bool):
            lines.append(f"{setting.name} = {str(value).lower()}  # {source}")
        elif isinstance(value, int | float):
            lines.append(f"{setting.name} = {value}  # {source}")
        else:
            lines.append(f"{setting.name} = {json.dumps(str(value))}  # {source}")
    return lines


def restart_needed(old: RelayConfig, new: RelayConfig) -> list[str]:
    """Settings that differ but cannot change while running."""
    return [
        s.name for s in SETTINGS if not s.live and getattr(old, s.field) != getattr(new, s.field)
    ]


def live_changes(old: RelayConfig, new: RelayConfig) -> list[str]:
    """Settings that differ and that a reload applies; a new token in the same file counts."""
    names = [s.name for s in SETTINGS if s.live and getattr(old, s.field) != getattr(new, s.field)]
    if old.api_token != new.api_token and "api_token_file" not in names:
        names.append("api_token_file")
    return names
