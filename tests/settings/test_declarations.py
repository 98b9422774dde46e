"""One declaration per setting: the table, flags, variables, keys and example file follow it."""

import argparse
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.cli.environment import Environment
from mcrelay.cli.main import build_parser
from mcrelay.cli.status import ExitStatus
from mcrelay.settings import example
from mcrelay.settings.config import ConfigValueError, RelayConfig
from mcrelay.settings.declare import INTERNAL, SECTIONS, SETTING
from mcrelay.settings.resolve import SettingsError, resolve
from mcrelay.settings.table import BY_NAME, SETTINGS, Setting, toml_type
from support import Console

EXAMPLE = Path(__file__).parents[2] / "packaging" / "mcrelay.toml"
FIELDS = dataclasses.fields(RelayConfig)


def test_every_field_is_a_setting_with_complete_metadata_or_says_why_not() -> None:
    for each in FIELDS:
        assert (SETTING in each.metadata) != (INTERNAL in each.metadata), each.name
        if INTERNAL in each.metadata:
            assert each.metadata[INTERNAL], each.name
            continue
        setting = BY_NAME[each.metadata[SETTING].name or each.name]
        assert setting.field == each.name
        assert setting.help, each.name
        assert setting.section in SECTIONS, each.name
        assert callable(setting.convert), each.name
        if each.default is dataclasses.MISSING:
            assert setting.default_text, each.name
    assert {s.field for s in SETTINGS} == {f.name for f in FIELDS if SETTING in f.metadata}


def test_flags_variables_keys_and_types_are_derived_from_the_declarations() -> None:
    hints = typing.get_type_hints(RelayConfig)
    for setting in SETTINGS:
        assert setting.flag == "--" + setting.name.replace("_", "-")
        assert setting.env == "MCRELAY_" + setting.name.upper()
        assert setting.toml is toml_type(hints[setting.field])
    assert [s.name for s in SETTINGS][:3] == ["group", "port", "interface"]
    assert BY_NAME["client_timeout"].field == "client_timeout_s"
    parser = build_parser(Environment(environ={}))
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    flags = {
        flag for action in commands.choices["daemon"]._actions for flag in action.option_strings
    }
    assert {s.flag for s in SETTINGS} <= flags


def test_each_default_is_what_its_converter_reads_from_its_own_text() -> None:
    RelayConfig()  # every default passes every check
    for setting in SETTINGS:
        if setting.default is None or setting.toml is bool:
            continue
        assert setting.convert(str(setting.default)) == setting.default, setting.name


@given(st.sampled_from(SETTINGS), st.text(max_size=40))
def test_any_text_gives_a_value_error_or_a_value_relayconfig_takes(
    setting: Setting, text: str
) -> None:
    """A converter raises only ValueError; what it returns, RelayConfig takes, or refuses
    by that setting's own rule with a ConfigValueError naming it."""
    try:
        value = setting.convert(text)
    except ValueError:
        return
    # Out of the way of the rules between fields: a token, and one event stream.
    room = {"api_token": "t", "api_max_event_subscribers": 1, "key_file": Path("relay-key.pem")}
    refused_by = None
    try:
        RelayConfig(**{**room, setting.field: value})
    except ConfigValueError as exc:
        refused_by = exc.field
    assert refused_by in (None, setting.field)


def test_the_example_file_is_made_from_the_declarations() -> None:
    assert EXAMPLE.read_text() == example.render(), (
        "run: python -m mcrelay.settings.example > packaging/mcrelay.toml"
    )


def test_the_settings_import_no_trio_api_daemon_cli_or_client() -> None:
    modules = ", ".join(f"mcrelay.settings.{name}" for name in ("example", "resolve"))
    script = (
        f"import sys, {modules}\n"
        "print('\\n'.join(name for name in sys.modules if name == 'trio' or name.split('.')[:2]"
        " in (['mcrelay', 'api'], ['mcrelay', 'daemon'], ['mcrelay', 'cli'], "
        "['mcrelay', 'client'])))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == []


@pytest.mark.parametrize(
    "line",
    ['authorized_keys = "/tmp/a\\u0000b"', 'api_token_file = "/tmp/a\\u0000b"', 'key_file = ""'],
)
def test_a_file_setting_with_a_nul_or_nothing_is_a_settings_error(
    tmp_path: Path, line: str
) -> None:
    # Found in review: a NUL reached os.open (ValueError: a traceback, exit 1, and a
    # unit that restarts in a loop); an empty path was the current directory.
    toml = tmp_path / "mcrelay.toml"
    toml.write_text(line + "\n")
    with pytest.raises(SettingsError, match="not a file path"):
        resolve({}, {}, toml)


async def test_config_check_of_a_nul_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    toml = tmp_path / "mcrelay.toml"
    toml.write_text('[secure]\nauthorized_keys = "/tmp/a\\u0000b"\n')
    console = Console()
    assert await console.run("config", "check", "--config", str(toml)) == ExitStatus.USAGE
    assert "not a file path" in console.stderr.getvalue()
