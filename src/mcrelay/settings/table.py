"""Every setting in one table, derived from RelayConfig's declarations.

``SETTINGS`` lists them in RelayConfig's field order, which is the order of
``--help``, ``config check``, the API's status and the example file.
"""

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcrelay.settings.config import RelayConfig
from mcrelay.settings.convert import Check
from mcrelay.settings.declare import CHECK, SETTING, Declared
from mcrelay.settings.profiles import contradiction, served_profiles


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    """The TOML key, and the flag without ``--`` (dashes for underscores)."""
    field: str
    """The RelayConfig field it sets."""
    convert: Callable[[str], Any]
    check: Check | None
    toml: type
    """The TOML value type accepted: str, int, float (an int is a float too) or bool.
    A bool setting's flag takes no value: giving it means true."""
    section: str
    live: bool
    """A reload (SIGHUP) applies it; otherwise it needs a restart."""
    help: str
    default: Any
    """RelayConfig's default; None where it comes from a factory (see ``default_text``)."""
    default_text: str | None
    """The default in words, where it depends on the machine or the user."""
    example: object
    command_default: Callable[[Mapping[str, str]], Any] | None
    """The command's default, from its environment, where it is not RelayConfig's."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "MCRELAY_" + self.name.upper()


def toml_type(annotation: object) -> type:
    """How a field's value is written in the file: a bool, a number, or else a string."""
    for kind in (bool, int, float):
        if annotation is kind:
            return kind
    return str


def toml_value(value: object) -> str:
    """``value`` as the right-hand side of a TOML line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


def _derive() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(RelayConfig)
    settings = []
    for each in dataclasses.fields(RelayConfig):
        declared: Declared | None = each.metadata.get(SETTING)
        if declared is None:
            continue
        settings.append(
            Setting(
                name=declared.name or each.name,
                field=each.name,
                convert=declared.convert,
                check=each.metadata[CHECK],
                toml=toml_type(hints[each.name]),
                section=declared.section,
                live=declared.live,
                help=declared.help,
                default=None if each.default is dataclasses.MISSING else each.default,
                default_text=declared.default_text,
                example=declared.example,
                command_default=declared.command_default,
            )
        )
    return tuple(settings)


SETTINGS = _derive()
BY_NAME = {setting.name: setting for setting in SETTINGS}
BY_FIELD = {setting.field: setting for setting in SETTINGS}


def restart_needed(old: RelayConfig, new: RelayConfig) -> list[str]:
    """Settings that differ but cannot change while running.

    The profiles served are fixed at start too, so an authorized-keys file that a reload
    gives or takes away, which would turn the legacy profile off or on, waits for a
    restart (a reload from one such file to another applies at once)."""
    names = [
        s.name for s in SETTINGS if not s.live and getattr(old, s.field) != getattr(new, s.field)
    ]
    restricted = new.authorized_keys is not None
    restricting = served_profiles(
        old.profiles, restricted=restricted, bridge_legacy=old.bridge_legacy
    )
    # Nor is it applied where, beside the profiles and bridge_legacy kept as they run,
    # it would contradict them (bridge_legacy given with it: both wait together).
    if restricting != old.served_profiles or contradiction(
        old.profiles, restricted=restricted, bridge_legacy=old.bridge_legacy
    ):
        names.append("authorized_keys")
    return names


FOLLOWERS = {"authorized_keys": ("authorized_key_list",)}
"""Internal fields read from a setting's file, kept with it when it is kept."""


def reloadable(old: RelayConfig, new: RelayConfig) -> tuple[RelayConfig, list[str]]:
    """What a reload applies: ``new``, with what cannot change while running kept as in
    ``old``; and the names of the settings so kept, for the log."""
    fixed = restart_needed(old, new)
    fields = [BY_NAME[name].field for name in fixed]
    fields += [follower for name in fixed for follower in FOLLOWERS.get(name, ())]
    return dataclasses.replace(new, **{field: getattr(old, field) for field in fields}), fixed


def live_changes(old: RelayConfig, new: RelayConfig) -> list[str]:
    """Settings that differ and that a reload applies; a new token in the same file counts,
    and so do new authorized keys."""
    names = [s.name for s in SETTINGS if s.live and getattr(old, s.field) != getattr(new, s.field)]
    if old.api_token != new.api_token and "api_token_file" not in names:
        names.append("api_token_file")
    if old.authorized_key_list != new.authorized_key_list and "authorized_keys" not in names:
        names.append("authorized_keys")
    return names
