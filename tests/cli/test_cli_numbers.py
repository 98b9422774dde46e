"""Numbers in flags, MCRELAY_* variables and the settings file: plain ASCII decimal, and an
error that names the flag or variable and says what is expected."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.cli.status import ExitStatus
from mcrelay.settings.convert import port, positive_float, positive_int
from support import Console, assert_one_error_line

NOT_NUMBERS = ["abc", "", " 5", "5 ", "1_000", "\uff15", "0x10", "nan", "inf", "-1", "+5", "1e999"]


@pytest.mark.parametrize(
    ("argv", "environ", "fragments"),
    [
        (["send", "x"], {"MCRELAY_PORT": "abc"}, ["MCRELAY_PORT: 'abc'", "0 to 65535"]),
        (["daemon"], {"MCRELAY_PORT": "abc"}, ["MCRELAY_PORT: 'abc'", "0 to 65535"]),
        (["daemon"], {"MCRELAY_CLIENT_TIMEOUT": "soon"}, ["MCRELAY_CLIENT_TIMEOUT", "number"]),
        (["daemon"], {"MCRELAY_MAX_CLIENTS": "1_000"}, ["MCRELAY_MAX_CLIENTS", "integer"]),
        (["send", "x"], {"MCRELAY_REGISTER_TIMEOUT": "nan"}, ["MCRELAY_REGISTER_TIMEOUT"]),
        (["send", "--port", "abc", "x"], {}, ["--port", "'abc'", "0 to 65535"]),
        (["daemon", "--crypto-workers", "two"], {}, ["--crypto-workers", "'two'", "integer"]),
        (["kick", "127.0.0.1:9", "--ban", "\uff16\uff10"], {}, ["--ban", "plain decimal"]),
    ],
)
async def test_a_bad_number_names_where_and_what(
    argv: list[str], environ: dict[str, str], fragments: list[str]
) -> None:
    console = Console(environ=environ)
    assert await console.run(*argv) == ExitStatus.USAGE
    assert_one_error_line(console, *fragments)
    assert "invalid literal" not in console.stderr.getvalue()


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_only_plain_decimal_is_a_number(text: str) -> None:
    for convert in (port, positive_float, positive_int):
        with pytest.raises(ValueError, match=re.escape(repr(text))):
            convert(text)


@given(st.text(max_size=40))
def test_converters_take_any_text(text: str) -> None:
    """Any text: a value in range, or a ValueError that quotes it; nothing else."""
    for convert, low, high in (
        (port, 0, 65535),
        (positive_int, 1, 10**30),
        (positive_float, 0, float("inf")),
    ):
        error = ""
        try:
            value = convert(text)
        except ValueError as exc:
            error = str(exc)
        if error:
            assert repr(text) in error
        else:
            assert text.isascii()
            assert low <= value <= high


@given(st.integers(min_value=0, max_value=65535))
def test_every_port_round_trips(number: int) -> None:
    assert port(str(number)) == number


@given(st.floats(min_value=1e-300, max_value=1e300))
def test_every_positive_float_as_python_writes_it(number: float) -> None:
    # A TOML float reaches the converter as str(value).
    assert positive_float(str(number)) == number
