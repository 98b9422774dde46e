"""The example settings file, made from the declarations.

``python -m mcrelay.settings.example > packaging/mcrelay.toml`` writes it again after
a setting changes; a test checks that the committed file is what this makes.
"""

import textwrap

from mcrelay.settings.declare import SECTIONS
from mcrelay.settings.table import SETTINGS, Setting, toml_value

HEADER = """\
# mcrelay daemon settings (TOML). Every key is optional; shown with its default.
# Precedence: command-line flag > MCRELAY_<NAME> environment variable > this file > default.
# Check a file with: mcrelay config check --config /etc/mcrelay/mcrelay.toml
# Reload with SIGHUP (systemctl reload mcrelay): settings marked 'live' apply at once;
# the others are reported in the log and need a restart.
# Keys may also stand at the top level, outside any section.
# Made by: python -m mcrelay.settings.example
"""
WIDTH = 88


def entry(setting: Setting) -> list[str]:
    """A setting's comment, then its line: its default, or an example commented out where
    the default is none or depends on the machine."""
    about = setting.help
    if setting.default_text is not None:
        about += f"; default: {setting.default_text}"
    about += " (live)" if setting.live else " (restart)"
    lines = textwrap.wrap(about, WIDTH, initial_indent="# ", subsequent_indent="# ")
    if setting.default is None or setting.default_text is not None:
        lines.append(f"# {setting.name} = {toml_value(setting.example)}")
    else:
        lines.append(f"{setting.name} = {toml_value(setting.default)}")
    return lines


def render() -> str:
    lines = [HEADER.rstrip("\n")]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for setting in SETTINGS:
            if setting.section == section:
                lines += entry(setting)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
