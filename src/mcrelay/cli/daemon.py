"""``mcrelay daemon`` and ``mcrelay config check``: settings from flags, environment and file."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcrelay.api.errors import NoRoomForApi
from mcrelay.cli.environment import Environment
from mcrelay.cli.options import (
    FLAG_ENVIRONMENT,
    Parser,
    UsageError,
    add_flag,
    argument_type,
    ipv4_address,
    multicast_group,
    multicast_ttl,
    port,
)
from mcrelay.cli.status import ExitStatus
from mcrelay.daemon.banfile import (
    BanFileError,
    bans_file,
    moved_warning,
    other_ports_files,
    read_bans_file,
)
from mcrelay.daemon.legacy.keyfile import KeyFileError, read_key_file
from mcrelay.daemon.secure.keyfile import read_secure_key_file
from mcrelay.federation.epoch import EpochFileError
from mcrelay.federation.keyfile import ClusterKeyError
from mcrelay.logs import configure_logging
from mcrelay.settings.config import RelayConfig
from mcrelay.settings.idle import idle_settings
from mcrelay.settings.profiles import LEGACY, SECURE
from mcrelay.settings.resolve import (
    Resolved,
    SettingsError,
    config_file,
    describe,
    resolve,
    unknown_variables,
)
from mcrelay.settings.table import BY_NAME, SETTINGS, Setting
from mcrelay.sockets import MULTICAST_TTL

log = logging.getLogger(__name__)


def add_network_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """The client commands' --group, --port, --interface and --ttl (flag, else env, else
    default)."""
    group, udp_port = BY_NAME["group"].default, BY_NAME["port"].default
    add_flag(parser, environ, "--group", multicast_group, group, "multicast group")
    add_flag(parser, environ, "--port", port, udp_port, "UDP port")
    add_flag(
        parser,
        environ,
        "--interface",
        ipv4_address,
        BY_NAME["interface"].default,
        "address of the interface for multicast",
    )
    add_flag(
        parser,
        environ,
        "--ttl",
        multicast_ttl,
        MULTICAST_TTL,
        "multicast TTL: what is sent to the group crosses TTL - 1 routers",
    )


def add_parser(subparsers: argparse._SubParsersAction[Parser], environ: Mapping[str, str]) -> None:
    del environ  # the daemon resolves the environment itself, to say where values come from
    daemon = subparsers.add_parser(
        "daemon",
        help="run the relay",
        description="Settings: flag > MCRELAY_<NAME> environment > --config file > default.",
    )
    _add_setting_flags(daemon)
    daemon.set_defaults(command=run)
    config = subparsers.add_parser("config", help="check a configuration")
    actions = config.add_subparsers(title="actions", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="validate, and print each effective setting and where it came from"
    )
    _add_setting_flags(check)
    check.set_defaults(command=run_check)


def settings_path(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("an empty path names no settings file")
    return Path(text)


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """--config and every setting's flag (``config check`` takes the daemon's own)."""
    parser.add_argument(
        "--config",
        type=settings_path,
        default=None,
        help="TOML settings file (default: /etc/mcrelay/mcrelay.toml if it exists); env MCRELAY_CONFIG",
    )
    for setting in SETTINGS:
        where = f"(default: {shown_default(setting)}); env {setting.env}; "
        where += f"file [{setting.section}] {setting.name}"
        if setting.toml is bool:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action="store_const",
                const=True,
                default=None,  # None: not given, so the environment or the file decides
                help=f"{setting.help} {where}",
            )
        else:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                type=argument_type(setting.convert),
                default=None,
                help=f"{setting.help} {where}",
            )


def shown_default(setting: Setting) -> str:
    """A setting's default as ``--help`` shows it."""
    if setting.default_text is not None:
        return setting.default_text
    value = setting.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _resolve(args: argparse.Namespace, env: Environment, *, any_owner: bool = False) -> Resolved:
    flags: dict[str, Any] = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    try:
        path = config_file(args.config, env.environ)
        return resolve(flags, env.environ, path, any_owner=any_owner)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def loader(args: argparse.Namespace, env: Environment) -> Any:
    """What a reload calls: the same flags, environment and file (chosen at start), the
    file read again. A file that has gone is an error, not a return to defaults; with no
    file at start, the default one is read once it is there (it was never: found by
    review), and from then on is required as if it had been there at start (a review
    found it gone again made a return to the defaults: open membership)."""
    chosen = config_file(args.config, env.environ)
    flags: dict[str, Any] = {s.name: getattr(args, s.name, None) for s in SETTINGS}

    def load() -> RelayConfig:
        nonlocal chosen
        if chosen is None:
            chosen = config_file(args.config, env.environ)
        return resolve(flags, env.environ, chosen).config

    return load


async def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    # Until the daemon listens for it, a reload request must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    resolved = _resolve(args, env)
    config = resolved.config
    configure_logging(config.log_level, config.log_format, env.stderr, env.environ)
    for warning in [
        *unknown_variables(env.environ, FLAG_ENVIRONMENT),
        *idle_settings(config),
        *resolved.overridden_warnings(),
    ]:
        log.warning("%s", warning)
    from mcrelay.service import run_until_signal

    try:
        await run_until_signal(
            config,
            reload=loader(args, env),
            settings_file=resolved.file,
            environ=env.environ,
        )
    except* (KeyFileError, ClusterKeyError, EpochFileError, BanFileError, NoRoomForApi) as group:
        # A key (or bans file, or open-file limit) the daemon cannot use is a setting to
        # fix, not a failure to retry: exit 2, which the systemd unit does not restart on.
        raise UsageError(str(_first(group))) from None
    return ExitStatus.OK


def _first(group: BaseExceptionGroup[Exception]) -> BaseException:
    """The first exception a group holds, however deep (one raised in the API's nursery
    is a group within a group: the error said "Exceptions from Trio nursery")."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def _check_key_files(config: RelayConfig, env: Environment, any_owner: bool) -> None:
    """The relay's key files and its bans file, as the daemon reads them at start (a
    corrupt or shared key passed the check, and the daemon then exited 2: found by
    review). Whoever owns them; but a key that is not its directory's owner's (made by
    ``sudo mcrelay keygen`` in the daemon's state directory, say) is one the daemon,
    running as that owner, cannot read: said."""
    paths: list[Path] = []
    try:
        if LEGACY in config.served_profiles:  # the RSA key is made for legacy only
            read_key_file(config.key_file, any_owner=any_owner)
            paths.append(config.key_file)
        if SECURE in config.served_profiles:
            read_secure_key_file(config.secure_key_path, any_owner=any_owner)
            paths.append(config.secure_key_path)
        if config.port:  # an ephemeral port's relay keeps its bans in memory only
            path = bans_file(config.key_file.parent, config.port)
            read_bans_file(path, any_owner=any_owner)
            if not os.path.lexists(path) and (others := other_ports_files(path)):
                env.say(f"mcrelay: warning: {moved_warning(path, others)}")
    except (KeyFileError, BanFileError) as exc:
        raise UsageError(str(exc)) from None
    for path in paths:
        try:
            owner, directory_owner = path.stat().st_uid, path.parent.stat().st_uid
        except OSError:
            continue  # none yet: made at start
        if owner != directory_owner:
            env.say(
                f"mcrelay: warning: {path} belongs to uid {owner}, its directory to uid "
                f"{directory_owner}: if the daemon runs as its directory's owner (systemd's "
                "StateDirectory), it cannot read the key"
            )


def _say_other_owners(paths: list[Path | None], env: Environment) -> None:
    """Files that say whom to trust, owned by neither root nor us: the daemon takes them
    only if it runs as their owner (root's check did not say so: found by review)."""
    for path in paths:
        try:
            owner = path.stat().st_uid if path is not None else 0
        except OSError:
            continue
        if owner not in (0, os.geteuid()):
            env.say(
                f"mcrelay: warning: {path} belongs to uid {owner}: the daemon takes it only "
                f"if it runs as uid {owner}"
            )


async def run_check(args: argparse.Namespace, env: Environment) -> ExitStatus:
    # Root may check for the daemon's user, whose files it may not own: it asks only the
    # modes; any other user checks as the daemon run by it would (found by review).
    any_owner = os.geteuid() == 0
    resolved = _resolve(args, env, any_owner=any_owner)
    path = config_file(args.config, env.environ)
    if resolved.config.federation_servers:  # its files, as the daemon reads them at start
        from mcrelay.service import read_federation_files

        try:
            read_federation_files(resolved.config, any_owner=any_owner)
        except ClusterKeyError as exc:
            raise UsageError(str(exc)) from None
    _check_key_files(resolved.config, env, any_owner)
    if any_owner:
        _say_other_owners([path, resolved.config.authorized_keys], env)
    print(f"# configuration: {path or 'no file'}; all settings valid", file=env.stdout)
    for warning in [
        *unknown_variables(env.environ, FLAG_ENVIRONMENT),
        *resolved.overridden_warnings(),
    ]:
        env.say(f"mcrelay: warning: {warning}")
    for line in describe(resolved):
        print(line, file=env.stdout)
    return ExitStatus.OK
