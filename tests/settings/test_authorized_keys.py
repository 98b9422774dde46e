"""The authorized-keys file: read whole or refused, naming the file and each bad line."""

import base64
import os
from pathlib import Path

import pytest

from mcrelay.files import FileError
from mcrelay.protocol.secure.keys import AuthorizedKey, encode_key
from mcrelay.settings import authorized
from mcrelay.settings.authorized import read_authorized_keys
from mcrelay.settings.resolve import SettingsError, consequences, resolve

ALICE = bytes(range(32))
BOB = bytes(range(1, 33))


def write(tmp_path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path = tmp_path / "authorized-keys"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(FileError) as caught:
        read_authorized_keys(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_keys_and_names_in_the_files_order(tmp_path: Path) -> None:
    text = (
        "\ufeff# who may join\n\n"
        f"{encode_key(ALICE)} Alice (laptop)\r\n"
        f"   {encode_key(BOB)}\tbob  \n"
        "   # a comment, indented\n"
    )
    assert read_authorized_keys(write(tmp_path, text)) == (
        AuthorizedKey(ALICE, "Alice (laptop)"),
        AuthorizedKey(BOB, "bob"),
    )


def test_an_empty_file_admits_nobody(tmp_path: Path) -> None:
    assert read_authorized_keys(write(tmp_path, "# nobody yet\n")) == ()


def test_every_bad_line_is_named_and_the_file_refused(tmp_path: Path) -> None:
    text = (
        f"{encode_key(ALICE)} alice\n"
        f"{encode_key(ALICE)[:-2]} short\n"
        "# fine\n"
        f"{encode_key(BOB)}\n"
        f"{encode_key(ALICE)} alice again\n"
        f"{base64.b64encode(bytes(33)).decode()} long\n"
    )
    path = write(tmp_path, text)
    assert refusal(path) == (
        f"authorized keys file {path}: "
        f"line 2: a key is 44 characters of base64, {encode_key(ALICE)[:-2]!r} has 42; "
        "line 4: the key has no name (write: KEY name); "
        "line 5: key already listed on line 1; "
        f"line 6: {'A' * 44!r} is not the base64 of a 32-byte key"
    )


def test_past_five_bad_lines_the_rest_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "bad\n" * 8)
    message = refusal(path)
    assert message.count("line ") == 5
    assert message.endswith("; and 3 more bad lines")
    assert refusal(write(tmp_path, "bad\n" * 6)).endswith("; and 1 more bad line")


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"{encode_key(ALICE)} alice\n".encode() + b"\xff\xfe name\n")
    assert refusal(path) == f"authorized keys file {path}: line 2: not UTF-8 text"


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o622])
def test_a_file_group_or_others_may_change_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, f"{encode_key(ALICE)} alice\n", mode)
    assert refusal(path) == (
        f"authorized keys file {path} has mode {mode:04o}; group or others may change it: "
        f"chmod go-w {path}"
    )


def test_a_file_others_could_replace_through_its_directory_or_a_link_is_refused(
    tmp_path: Path,
) -> None:
    """Another user swapped the file, in a directory all may write, for a link to an older
    list that still held a revoked key (found by review). A link is followed, as sshd
    does, but the directories of the path as given, where the link lies, are checked as
    well as those of the file it leads to."""
    shared = tmp_path / "shared"
    shared.mkdir()
    older = write(tmp_path, f"{encode_key(ALICE)} alice\n{encode_key(BOB)} revoked\n")
    link = shared / "authorized-keys"
    link.symlink_to(older)
    assert [entry.name for entry in read_authorized_keys(link)] == ["alice", "revoked"]
    shared.chmod(0o777)
    assert refusal(link) == (
        f"authorized keys file {link} is in {shared}, which group or others may change "
        f"(mode 0777): they could replace the file; chmod go-w {shared}"
    )
    shared.chmod(0o1777)  # sticky, as /tmp: only a file's owner may replace it
    assert [entry.name for entry in read_authorized_keys(link)] == ["alice", "revoked"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_a_link_in_another_users_directory_is_refused(tmp_path: Path) -> None:
    """A link in a directory another user owns could be turned to an older list: the
    directories of the path as given were not looked at (found by review)."""
    theirs = tmp_path / "mallory"
    theirs.mkdir()
    (theirs / "cfg").symlink_to(tmp_path)
    write(tmp_path, f"{encode_key(ALICE)} alice\n")
    os.chown(theirs, 61000, 61000)
    path = theirs / "cfg" / "authorized-keys"
    assert refusal(path).startswith(
        f"authorized keys file {path} is in {theirs}, which belongs to uid 61000"
    )
    assert [entry.name for entry in read_authorized_keys(path, any_owner=True)] == ["alice"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_a_link_in_the_middle_of_a_chain_is_checked_too(tmp_path: Path) -> None:
    """etc/keys -> theirs/hop -> real/keys: the middle link's directory was never looked
    at, and its owner could turn it to an older list (found by review)."""
    (tmp_path / "real").mkdir()
    write(tmp_path / "real", f"{encode_key(ALICE)} alice\n")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "hop").symlink_to(tmp_path / "real" / "authorized-keys")
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "keys"
    path.symlink_to(theirs / "hop")
    assert [entry.name for entry in read_authorized_keys(path)] == ["alice"]
    os.chown(theirs, 61000, 61000)
    assert refusal(path).startswith(
        f"authorized keys file {path} is in {theirs}, which belongs to uid 61000"
    )


def test_a_missing_file_a_fifo_a_directory_and_a_huge_file_are_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert refusal(missing) == (
        f"cannot read authorized keys file {missing}: No such file or directory"
    )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o644)
    assert refusal(fifo) == f"cannot read authorized keys file {fifo}: not a regular file"
    directory = tmp_path / "directory"
    directory.mkdir()
    assert refusal(directory) == (f"cannot read authorized keys file {directory}: Is a directory")
    huge = tmp_path / "huge"
    with huge.open("wb") as file:
        file.truncate(authorized.MAX_AUTHORIZED_KEYS_FILE_BYTES + 1)
    assert refusal(huge) == (
        f"authorized keys file {huge} is over {authorized.MAX_AUTHORIZED_KEYS_FILE_BYTES} "
        "bytes: too large to be one"
    )


def test_resolve_reads_the_file_and_says_what_it_makes(tmp_path: Path) -> None:
    path = write(tmp_path, f"{encode_key(ALICE)} alice\n{encode_key(BOB)} bob\n")
    config = resolve({"authorized_keys": path}, {}, None).config
    assert config.authorized_key_list == (AuthorizedKey(ALICE, "alice"), AuthorizedKey(BOB, "bob"))
    assert config.served_profiles == ("secure",)
    assert consequences(config) == [
        "# profiles served: secure (legacy is off: authorized_keys without bridge_legacy)",
        f"# authorized keys: 2 keys from {path}; secure members are restricted to those",
    ]
    bridged = resolve({"authorized_keys": path, "bridge_legacy": True}, {}, None).config
    assert consequences(bridged)[0] == "# profiles served: legacy,secure"
    assert consequences(bridged)[-1] == (
        "# warning: a bridged legacy member reads and can send everything: this relay has "
        "legacy-level confidentiality"
    )
    assert consequences(resolve({}, {}, None).config) == ["# profiles served: legacy,secure"]


def test_resolve_refuses_a_bad_file_with_its_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "nonsense\n")
    with pytest.raises(SettingsError) as caught:
        resolve({}, {"MCRELAY_AUTHORIZED_KEYS": str(path)}, None)
    assert str(caught.value) == (
        f"authorized keys file {path}: line 1: a key is 44 characters of base64, 'nonsense' has 8"
    )


def test_a_dot_dot_after_a_link_is_resolved_as_the_kernel_does(tmp_path: Path) -> None:
    """trusted/link/../keys, link -> eve/sub: the kernel reads eve/keys, and the check
    looked at trusted/keys, dropping the '..' from the text (found by review)."""
    eve = tmp_path / "eve"
    (eve / "sub").mkdir(parents=True)
    write(eve, f"{encode_key(ALICE)} alice\n")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "link").symlink_to(eve / "sub")
    path = trusted / "link" / ".." / "authorized-keys"
    assert [entry.name for entry in read_authorized_keys(path)] == ["alice"]
    eve.chmod(0o777)
    assert refusal(path).startswith(f"authorized keys file {path} is in {eve}, which group")
