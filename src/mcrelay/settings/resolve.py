"""Where each setting's value comes from, and ``mcrelay config check``'s account of it.

Precedence: command-line flag > ``MCRELAY_<NAME>`` environment variable > the
TOML file > the default (the command's own, where it has one). The table
(``table.py``) says which flags, variables and keys there are.
"""

import difflib
import errno
import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcrelay.files import (
    FileError,
    read_regular_file,
    read_token_file,
    require_trusted_directories,
    require_trusted_writers,
)
from mcrelay.protocol.secure.keys import AuthorizedKey
from mcrelay.settings.authorized import read_authorized_keys
from mcrelay.settings.config import ConfigValueError, RelayConfig, secure_key_beside
from mcrelay.settings.declare import SECTIONS
from mcrelay.settings.dotted import check_dotted_keys
from mcrelay.settings.idle import idle_settings
from mcrelay.settings.profiles import BRIDGE_WARNING, LEGACY
from mcrelay.settings.quoted import quoted
from mcrelay.settings.table import BY_FIELD, BY_NAME, SETTINGS, toml_value

DEFAULT_CONFIG_FILE = Path("/etc/mcrelay/mcrelay.toml")
MAX_SETTINGS_FILE_BYTES = 256 * 1024
"""A settings file is a few KB; the TOML reader's cost grows with it (see dotted.py)."""


class SettingsError(ValueError):
    """A setting from a flag, the environment or the file is wrong; the message says where."""


@dataclass(frozen=True, slots=True)
class Resolved:
    config: RelayConfig
    sources: dict[str, str]
    """For each setting name: 'flag', 'env MCRELAY_X', 'file PATH' or 'default'."""
    file: Path | None
    """The settings file read, if any."""
    overridden: tuple[str, ...] = ()
    """Settings the file gives that a flag or the environment gives too (theirs win)."""

    def overridden_warnings(self) -> list[str]:
        """A sentence for each setting of the file that is not used: an ``api`` in the
        file under the unit's ``--api`` flag changed nothing, without a word (found by
        review)."""
        said = []
        for name in self.overridden:
            source = self.sources[name]
            given = BY_NAME[name].flag if source == "flag" else source.split()[-1]
            said.append(f"'{name}' in {self.file} is not used: {given} gives it")
        return said


def unknown_variables(environ: Mapping[str, str], known: Collection[str]) -> list[str]:
    """A warning for each ``MCRELAY_*`` variable that is no setting, no ``MCRELAY_CONFIG``
    and none of ``known`` (the commands' own): a misspelt one is otherwise silently
    ignored (``MCRELAY_AUTHORIZED_KEY`` would leave membership open)."""
    names = sorted({setting.env for setting in SETTINGS} | {"MCRELAY_CONFIG", *known})
    warnings = []
    for name in sorted(environ):
        if name.startswith("MCRELAY_") and name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{name} is not a setting of mcrelay and is ignored{hint}")
    return warnings


def config_file(explicit: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file to read: ``--config``, else ``MCRELAY_CONFIG``, else the default if it
    exists. An empty one is an error: it was read as the current directory, or (the
    variable) taken for none and the default read (found by review)."""
    if explicit is not None:
        return explicit
    if "MCRELAY_CONFIG" in environ:
        if not environ["MCRELAY_CONFIG"]:
            raise SettingsError("MCRELAY_CONFIG is empty: name a settings file, or unset it")
        return Path(environ["MCRELAY_CONFIG"])
    # Only a file that is not there means none: a dangling or looping link is read and
    # its error said, and so is a directory that cannot be searched, rather than taken
    # for no file (the defaults: no authorized keys, say).
    try:
        os.lstat(DEFAULT_CONFIG_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SettingsError(f"{DEFAULT_CONFIG_FILE}: cannot look at it: {exc.strerror}") from None
    return DEFAULT_CONFIG_FILE


UNIX = "unix:"


def read_file(path: Path, *, any_owner: bool = False) -> dict[str, Any]:
    """The settings in a TOML file, checked key by key; ``SettingsError`` names file and key.
    ``any_owner``: for ``config check`` on the daemon's behalf (see files.py)."""
    what = "settings file"
    try:
        contents = read_regular_file(path, what=what, limit=MAX_SETTINGS_FILE_BYTES)
        if contents is not None:
            # It names the authorized keys, the API and its token: whom to trust.
            require_trusted_writers(path, contents, what, any_owner=any_owner)
            require_trusted_directories(path, what, any_owner=any_owner)
    except FileError as exc:
        raise SettingsError(str(exc)) from None
    if contents is None:
        raise SettingsError(f"cannot read settings file {path}: {os.strerror(errno.ENOENT)}")
    try:
        # A byte-order mark, as some editors write, is not a statement (found by review).
        text = contents.data.decode("utf-8-sig")
        check_dotted_keys(text)
        document = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, UnicodeDecodeError, check_dotted_keys
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
                raise SettingsError(f"{path}: {quoted(where)} is set twice")
            values[name] = _file_value(path, where, name, item, section)
    return values


def _file_value(path: Path, where: str, key: str, value: Any, section: str | None) -> Any:
    setting = BY_NAME.get(key)
    if setting is None:
        raise SettingsError(f"{path}: unknown key {quoted(where)}")
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
        converted = setting.convert(str(value))
    except ValueError as exc:
        raise SettingsError(f"{path}: '{where}': {exc}") from None
    # A path is from the file's directory, as sshd and nginx read theirs: from the working
    # directory, the file meant one thing to config check run beside it and another to
    # the daemon, run from / (found by review). The API's unix: socket too.
    if isinstance(converted, Path) and not converted.is_absolute():
        converted = path.parent / converted
    elif key == "api" and isinstance(converted, str) and converted.startswith(UNIX):
        socket = Path(converted.removeprefix(UNIX))
        converted = converted if socket.is_absolute() else f"{UNIX}{path.parent / socket}"
    return converted


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    path: Path | None,
    *,
    any_owner: bool = False,
) -> Resolved:
    """The effective configuration, and where each value came from. ``any_owner``: for
    ``config check`` on another user's behalf (the files need not be ours)."""
    from_file = read_file(path, any_owner=any_owner) if path is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
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
        else:
            if setting.command_default is not None:
                values[setting.field] = setting.command_default(environ)
            sources[setting.name] = "default"
    token_file = values.get("api_token_file")
    values["api_token"] = read_token(token_file, any_owner) if token_file is not None else None
    authorized = values.get("authorized_keys")
    values["authorized_key_list"] = (
        authorized_list(authorized, any_owner) if authorized is not None else None
    )
    if values.get("secure_key_file") is None and "key_file" in values:
        # Shown where it is, by config check and the API, rather than as "not set".
        values["secure_key_file"] = secure_key_beside(values["key_file"])
    overridden = tuple(name for name in from_file if not sources[name].startswith("file"))
    try:
        return Resolved(RelayConfig(**values), sources, path, overridden)
    except ConfigValueError as exc:
        names = [BY_FIELD[f].name if f in BY_FIELD else f for f in (exc.field, *exc.others)]
        where = ", ".join(f"{sources.get(name, 'default')}: '{name}'" for name in names)
        raise SettingsError(f"{where}: {exc}") from None


def read_token(path: Path, any_owner: bool = False) -> str:
    try:
        return read_token_file(path, any_owner=any_owner)
    except FileError as exc:
        raise SettingsError(str(exc)) from None


def authorized_list(path: Path, any_owner: bool = False) -> tuple[AuthorizedKey, ...]:
    try:
        return read_authorized_keys(path, any_owner=any_owner)
    except FileError as exc:
        raise SettingsError(str(exc)) from None


def describe(resolved: Resolved) -> list[str]:
    """``name = value  # source`` lines (valid TOML), as ``mcrelay config check`` prints them,
    then comments on what they make together."""
    lines = []
    for setting in SETTINGS:
        value = getattr(resolved.config, setting.field)
        source = resolved.sources[setting.name]
        if value is None:
            lines.append(f"# {setting.name} is not set  # {source}")
        else:
            lines.append(f"{setting.name} = {toml_value(value)}  # {source}")
    return lines + consequences(resolved.config)


def consequences(config: RelayConfig) -> list[str]:
    """What the settings make together: the profiles served, who may join, and the
    warning the daemon logs when legacy members are bridged into a restricted relay."""
    served = ",".join(config.served_profiles)
    lines = [f"# profiles served: {served}"]
    if config.authorized_key_list is not None:
        count = len(config.authorized_key_list)
        lines.append(
            f"# authorized keys: {count} key{'' if count == 1 else 's'} from "
            f"{config.authorized_keys}; secure members are restricted to those"
        )
        if config.profiles is None and LEGACY not in config.served_profiles:
            lines[0] += " (legacy is off: authorized_keys without bridge_legacy)"
    if config.legacy_bridged:
        lines.append(f"# warning: {BRIDGE_WARNING}")
    lines.extend(f"# warning: {sentence}" for sentence in idle_settings(config))
    return lines
