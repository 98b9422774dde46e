"""``mcrelay daemon`` and ``mcrelay config check``: settings from flags, environment and file."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcrelay.cli.environment import Environment
from mcrelay.cli.options import (
    Parser,
    UsageError,
    add_flag,
    argument_type,
    ipv4_address,
    multicast_group,
    port,
)
from mcrelay.cli.status import ExitStatus
from mcrelay.daemon import config as defaults
from mcrelay.daemon.config import RelayConfig
from mcrelay.daemon.settings import (
    SETTINGS,
    Resolved,
    SettingsError,
    config_file,
    describe,
    resolve,
)
from mcrelay.logs import configure_logging


def add_network_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """The client commands' --group, --port and --interface (flag, else env, else default)."""
    add_flag(parser, environ, "--group", multicast_group, defaults.DEFAULT_GROUP, "multicast group")
    add_flag(parser, environ, "--port", port, defaults.DEFAULT_PORT, "UDP port")
    add_flag(
        parser,
        environ,
        "--interface",
        ipv4_address,
        defaults.DEFAULT_INTERFACE,
        "address of the interface for multicast",
    )


def add_parser(subparsers: argparse._SubParsersAction[Parser], environ: Mapping[str, str]) -> None:
    del environ  # the daemon resolves the environment itself, to say where values come from
    daemon = subparsers.add_parser(
        "daemon",
        help="run the relay",
        description="Settings: flag > MCRELAY_<NAME> environment > --config file > default.",
    )
    _add_config_flag(daemon)
    for setting in SETTINGS:
        daemon.add_argument(
            setting.flag,
            dest=setting.name,
            type=argument_type(setting.convert),
            default=None,
            help=f"{setting.help}; env {setting.env}; file [{setting.section}] {setting.name}",
        )
    daemon.set_defaults(command=run)
    config = subparsers.add_parser("config", help="check a configuration")
    actions = config.add_subparsers(title="actions", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="validate, and print each effective setting and where it came from"
    )
    _add_config_flag(check)
    check.set_defaults(command=run_check)


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (default: /etc/mcrelay/mcrelay.toml if it exists); env MCRELAY_CONFIG",
    )


def _resolve(args: argparse.Namespace, env: Environment) -> Resolved:
    flags: dict[str, Any] = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    try:
        return resolve(flags, env.environ, config_file(args.config, env.environ))
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def loader(args: argparse.Namespace, env: Environment) -> Any:
    """What a reload calls: the same flags and environment, the file read again."""

    def load() -> RelayConfig:
        flags: dict[str, Any] = {s.name: getattr(args, s.name, None) for s in SETTINGS}
        return resolve(flags, env.environ, config_file(args.config, env.environ)).config

    return load


async def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    config = _resolve(args, env).config
    configure_logging(config.log_level, config.log_format, env.stderr, env.environ)
    from mcrelay.daemon.service import run_until_signal

    await run_until_signal(config, reload=loader(args, env), environ=env.environ)
    return ExitStatus.OK


async def run_check(args: argparse.Namespace, env: Environment) -> ExitStatus:
    resolved = _resolve(args, env)
    path = config_file(args.config, env.environ)
    print(f"# configuration: {path or 'no file'}; all settings valid", file=env.stdout)
    for line in describe(resolved):
        print(line, file=env.stdout)
    return ExitStatus.OK
