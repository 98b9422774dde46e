"""``setting(...)``: a RelayConfig field that declares everything about one setting.

The metadata it leaves on the field is all that the rest of the package reads: the
table (``table.py``) is derived from it, and so are the flags, the ``MCRELAY_<NAME>``
variables, the TOML keys, ``config check``, what a reload may change, the API's view
of the settings and the example file.
"""

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcrelay.settings.convert import Check

SECTIONS = ("network", "relay", "secure", "limits", "api", "federation", "log")
"""The TOML file's sections, in the order the example file shows them."""

SETTING = "mcrelay.setting"
CHECK = "mcrelay.check"
INTERNAL = "mcrelay.internal"
"""Metadata keys: a :class:`Declared`, a :data:`Check`, and why a field is no setting."""


@dataclass(frozen=True, slots=True)
class Declared:
    """What ``setting(...)`` was told; :class:`~mcrelay.settings.table.Setting` adds the
    field's name, type and default."""

    convert: Callable[[str], Any]
    section: str
    live: bool
    help: str
    name: str | None
    default_text: str | None
    example: object
    command_default: Callable[[Mapping[str, str]], Any] | None


def setting(
    default: Any = dataclasses.MISSING,
    *,
    convert: Callable[[str], Any],
    section: str,
    live: bool,
    help: str,
    check: Check | None = None,
    name: str | None = None,
    default_factory: Callable[[], Any] | None = None,
    default_text: str | None = None,
    example: object = None,
    command_default: Callable[[Mapping[str, str]], Any] | None = None,
) -> Any:
    """A RelayConfig field that is an operator's setting.

    ``convert`` reads the text of a flag, a variable or a file value (``ValueError`` if
    malformed); ``check`` is the rule on the value, applied by RelayConfig itself, so it
    holds however the value was given. ``live``: a reload (SIGHUP) applies it; otherwise
    it needs a restart. ``name`` is the TOML key (and flag, and variable) when it is not
    the field's name. A default that depends on the machine or the user comes from
    ``default_factory`` and is said in words by ``default_text``; ``command_default``
    gives the command's default from its environment where it differs from the
    library's. ``example`` is the value the example file shows, commented out, when it
    cannot show the default (None, or described in words)."""
    if section not in SECTIONS:
        raise ValueError(f"section {section!r} is not one of {', '.join(SECTIONS)}")
    if default_factory is not None and default_text is None:
        raise ValueError("a default from a factory needs default_text to say it in words")
    if (default is None or default_text is not None) and example is None:
        raise ValueError("a setting whose default the example file cannot show needs an example")
    declared = Declared(convert, section, live, help, name, default_text, example, command_default)
    metadata = {SETTING: declared, CHECK: check}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def internal(default: Any, *, why: str, check: Check | None = None) -> Any:
    """A RelayConfig field that is not an operator's setting; ``why`` says why not."""
    return dataclasses.field(default=default, metadata={INTERNAL: why, CHECK: check})
