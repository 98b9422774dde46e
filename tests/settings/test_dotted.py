"""The bound on dotted keys, checked before the TOML reader sees a settings file."""

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.settings.dotted import MAX_DOTS_PER_LINE, check_dotted_keys

MANY = "a." * MAX_DOTS_PER_LINE


@given(st.text(alphabet=st.sampled_from(list("ab.#\"'\\\n =[]{}")), max_size=400))
def test_any_text_passes_or_names_a_line(text: str) -> None:
    try:
        check_dotted_keys(text)
    except ValueError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith("line ")


@given(st.lists(st.integers(0, MAX_DOTS_PER_LINE), max_size=20))
def test_keys_within_the_bound_pass_and_one_past_it_names_its_line(parts: list[int]) -> None:
    text = "".join(f"k{n}{'.a' * dots} = 1\n" for n, dots in enumerate(parts))
    check_dotted_keys(text)
    tomllib.loads(text)
    with pytest.raises(ValueError, match=rf"^line {len(parts) + 1}: "):
        check_dotted_keys(text + "z" + ".a" * (MAX_DOTS_PER_LINE + 1) + " = 1\n")


@pytest.mark.parametrize(
    "text",
    [
        f'x = "{MANY}."\n',
        f"x = '{MANY}.'\n",
        f'x = """\n{MANY}.\n{MANY}."""\n',
        f"x = '''{MANY}.'''\n",
        f'x = "\\"{MANY}.\\""\n',
        f'x = """{MANY}.\\""""""\n',
        f"x = 1 # {MANY}.\n",
        f'"{MANY}." = 1\n',
        f"[section]\nx = 1.5 # {MANY}\ny = 2.5\n",
    ],
)
def test_dots_in_strings_and_comments_are_not_counted(text: str) -> None:
    tomllib.loads(text)  # valid TOML, of a key of one part or two
    check_dotted_keys(text)


def test_a_string_left_open_ends_the_scan_for_the_reader_to_say() -> None:
    check_dotted_keys(f'x = "{MANY}.\n')
    check_dotted_keys(f'x = """{MANY}.')


def test_lines_after_a_string_of_several_are_counted_from_it() -> None:
    text = f'x = """\n\n"""\n{MANY}a.a = 1\n'
    with pytest.raises(ValueError, match=r"^line 4: "):
        check_dotted_keys(text)
