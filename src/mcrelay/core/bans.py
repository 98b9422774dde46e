"""Addresses, hosts and keys the operator banned, until the ban ends.

A ban names one client address (``ip:port``) or a whole host (``ip``), whose traffic
is all dropped, or a secure client's key (its id, ``k:`` and base64url), whose
handshakes get silence wherever they come from. A legacy client is its source
address, so a banned legacy client that merely changes its port is kept out only by
a host ban; a secure client is its key.

The list is held in memory and kept by the daemon in its bans file, so that a restart
lifts no ban: :func:`serialize_bans` and :func:`parse_bans` are that file's text, and
:class:`BanList` says when its bans change (a ban added, replaced or lifted; not when
one ends). The file I/O is the daemon's (``daemon/banfile.py``).
"""

import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mcrelay.protocol.addresses import Address, format_address, parse_address
from mcrelay.protocol.secure.keys import CLIENT_ID_PREFIX, parse_client_id
from mcrelay.settings.profiles import SECURE

BanTarget = Address | str
"""An ``(ip, port)`` address, a host's IP address alone, or a secure client's id."""
MAX_BAN_S = 365 * 24 * 3600.0
BAN_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
"""Plain ASCII decimal seconds: no sign, exponent, underscore, space or other digits."""
MAX_BANS = 10_000
"""Bans held at once. Kicks with a ban and ``POST /v1/bans`` add them; past this a new
one is refused (:class:`TooManyBans`) rather than an old one lifted in silence. It
bounds the bans file too."""


class TooManyBans(ValueError):
    """The list holds :data:`MAX_BANS` bans: one must end or be lifted first."""


@dataclass(frozen=True, slots=True)
class Ban:
    target: BanTarget
    until: float
    """Monotonic time the ban ends: the one the relay keeps. Its Unix time is asked of
    the wall clock when it is shown or written (:meth:`until_wall`): one kept from when
    the ban began was wrong once the clock was set, and a restart then dropped the ban
    (found by review)."""
    seconds: float
    """How long it was given for: what a wall clock behind at a restart cannot stretch."""

    @property
    def id(self) -> str:
        """``ip:port`` for an address, the IP alone (never bracketed) for a host."""
        return self.target if isinstance(self.target, str) else format_address(self.target)

    @property
    def scope(self) -> str:
        return ban_scope(self.target)

    def until_wall(self, now: float, wall_now: float) -> float:
        """The Unix time it ends, ``now`` and ``wall_now`` being one moment on both clocks."""
        return wall_now + (self.until - now)


def kick_ban_scope(scope: str | None, profile: str) -> str:
    """What a kick's ban keeps out: the scope asked, else a secure member's key, a legacy
    member's address."""
    return scope or ("key" if profile == SECURE else "address")


def ban_said(ban_s: float | None, scope: str) -> str:
    """A kick's ban as a log line says it (nothing without one)."""
    if ban_s is None:
        return ""
    return f", banned ({scope}) for {length_text(ban_s)} s"


def length_text(value: float) -> str:
    """A ban's length as given: ``600``, ``0.5``, ``31536000`` (not ``3.1536e+07``)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def ban_scope(target: BanTarget) -> str:
    """``address``, ``host`` or ``key``: what a ban on ``target`` keeps out."""
    if not isinstance(target, str):
        return "address"
    return "key" if target.startswith(CLIENT_ID_PREFIX) else "host"


@dataclass(frozen=True, slots=True)
class SavedBan:
    """A ban as the bans file keeps it: its target, the Unix time it ends, and how long
    it was given for."""

    target: BanTarget
    until_wall: float
    seconds: float


def parse_ban_target(text: str) -> BanTarget:
    """``ip:port`` (an address), a bare IPv4 address (a host), or a secure client's id
    (``k:`` and base64url: its key).

    Raises ``ValueError`` with a readable reason. The relay serves IPv4 only (its socket
    is IPv4, its interface an IPv4 address), so a ban on an IPv6 address would never match:
    it was accepted, listed and kept (found by review). An IPv4-mapped one
    (``::ffff:10.0.0.7``) is taken as the IPv4 address it names; any other is refused."""
    return _folded(_parse_any_target(text), text)


def _folded(target: BanTarget, text: str) -> BanTarget:
    """``target`` (read from ``text``) as :func:`parse_ban_target` takes it: an
    IPv4-mapped address as its IPv4 one, another IPv6 one refused."""
    host = _host(target)
    if host is None or ":" not in host:
        return target
    mapped = ipaddress.IPv6Address(host).ipv4_mapped
    if mapped is None:
        raise ValueError(
            f"{text!r}: the relay serves IPv4 only, so a ban on an IPv6 address would never match"
        )
    return str(mapped) if isinstance(target, str) else (str(mapped), target[1])


def _host(target: BanTarget) -> str | None:
    """The IP address a ban on ``target`` names; None for a key."""
    if isinstance(target, tuple):
        return target[0]
    return None if target.startswith(CLIENT_ID_PREFIX) else target


def _parse_any_target(text: str) -> BanTarget:
    """:func:`parse_ban_target`, IPv6 addresses left as they are.

    An IPv6 scope (``%eth0``) is refused: no source the relay reads has one, and its
    text is anything (spaces, line breaks)."""
    if "%" in text:
        raise ValueError(f"{text!r}: a ban names no IPv6 scope (%...)")
    if text.startswith(CLIENT_ID_PREFIX):
        parse_client_id(text)
        return text
    try:
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    try:
        return parse_address(text)
    except ValueError as exc:
        if ":" in text:  # meant as an address: what is wrong with it
            raise
        # It said "not ip:port", though a bare IP is one too (found by review).
        raise ValueError(
            f"{text!r} is no ban's id: ip:port (an address), an IP (a host) or k:... (a key)"
        ) from exc


def parse_ban_seconds(text: str) -> float:
    """A ban's length: plain decimal seconds above 0, at most a year; else ``ValueError``."""
    if not BAN_SECONDS.fullmatch(text) or not 0 < float(text) <= MAX_BAN_S:
        raise ValueError(
            f"{text!r}: a ban is plain decimal seconds (as in 600 or 0.5), "
            f"above 0 and at most {MAX_BAN_S:.0f}"
        )
    return float(text)


class BanList:
    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        """``on_change`` is called once the bans changed (added, replaced, lifted): the
        daemon then writes its bans file. A ban that ends calls nothing."""
        self._bans: dict[BanTarget, Ban] = {}
        self.on_change = on_change

    def __len__(self) -> int:
        return len(self._bans)

    def check_room(self, targets: Iterable[BanTarget], now: float) -> None:
        """Raise :class:`TooManyBans` unless bans on all of ``targets`` fit (a kick's bans
        go in together or not at all)."""
        new = {target for target in targets if target not in self._bans}
        if len(self._bans) + len(new) > MAX_BANS:
            self.active(now)  # bans that ended make room
        if len(self._bans) + len(new) > MAX_BANS:
            raise TooManyBans(f"{len(self._bans)} bans already, the most held: lift some first")

    def ban(self, target: BanTarget, seconds: float, now: float) -> Ban:
        """Ban ``target`` for ``seconds`` (in place of a ban it had); :class:`TooManyBans`
        when the list is full."""
        self.check_room([target], now)
        seconds = min(seconds, MAX_BAN_S)  # its date must stay a date
        ban = Ban(target, now + seconds, seconds)
        self._bans[target] = ban
        self._changed()
        return ban

    def restore(self, saved: Iterable[SavedBan], now: float, wall_now: float) -> int:
        """Take back bans kept in the bans file, ``now`` and ``wall_now`` being the same
        moment on both clocks; those that ended meanwhile are dropped. Returns how many
        were taken. A wall clock behind (a host booting before its time is set) never
        makes a ban last longer from now than it was given for (it made a ban of 600 s
        last 30 days: found by review)."""
        taken = 0
        for each in saved:
            remaining_s = min(each.until_wall - wall_now, each.seconds, MAX_BAN_S)
            if remaining_s > 0 and len(self._bans) < MAX_BANS:
                self._bans[each.target] = Ban(each.target, now + remaining_s, each.seconds)
                taken += 1
        return taken

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def is_banned(self, address: Address, now: float) -> bool:
        """Is this source banned, by its own address or by its host's?"""
        return self._active(address, now) or self._active(address[0], now)

    def is_key_banned(self, client_id: str, now: float) -> bool:
        """Is this secure client's key banned?"""
        return self._active(client_id, now)

    def _active(self, target: BanTarget, now: float) -> bool:
        ban = self._bans.get(target)
        if ban is None:
            return False
        if ban.until <= now:
            del self._bans[target]
            return False
        return True

    def lift(self, target: BanTarget, now: float) -> Ban | None:
        """End an active ban early; ``None`` when there is none (or it already ended)."""
        ban = self._bans.pop(target, None)
        if ban is None or ban.until <= now:
            return None
        self._changed()
        return ban

    def active(self, now: float) -> list[Ban]:
        for target in [t for t, ban in self._bans.items() if ban.until <= now]:
            del self._bans[target]
        return sorted(self._bans.values(), key=lambda ban: ban.until)


BANS_FILE_HEADER = "mcrelay-bans 1"
"""The first line of a bans file: what it is, and the version of its layout."""
MAX_WALL_TIME = 253_402_300_799.0
"""The last second of year 9999: a later end is no date (it would not even print)."""
WALL_TIME = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
"""A Unix time as the file writes it: decimal, to the microsecond."""
MAX_BAN_LINE_BYTES = 96
"""One line of the file: an id (47 characters at most: ``[v6]:port``), its end (19) and
its length (16)."""
MAX_BANS_FILE_BYTES = len(BANS_FILE_HEADER) + 1 + MAX_BANS * MAX_BAN_LINE_BYTES


def serialize_bans(bans: Iterable[Ban], now: float, wall_now: float) -> bytes:
    """The bans file's text: its header line, then a line per ban, its id, the Unix time
    it ends and how long it was given for, to the microsecond
    (``10.0.0.7 1795012345.125000 600.000000``)."""
    lines = [
        BANS_FILE_HEADER,
        *(f"{ban.id} {ban.until_wall(now, wall_now):.6f} {ban.seconds:.6f}" for ban in bans),
    ]
    return "".join(f"{line}\n" for line in lines).encode("ascii")


def parse_bans(data: bytes) -> list[SavedBan]:
    """The bans a bans file holds (ended ones included: :meth:`BanList.restore` drops
    them). ``ValueError`` naming the first line that is not a ban, for a file that is not
    one, for a target given twice or for more than :data:`MAX_BANS` bans."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not a bans file: it is not ASCII text") from None
    lines = text.split("\n")
    if lines[0] != BANS_FILE_HEADER:
        name, _, version = lines[0].partition(" ")
        ours, _, layout = BANS_FILE_HEADER.partition(" ")
        if name == ours and version.isdigit() and int(layout) < int(version[:9]):
            # Not "not a bans file": the operator is to run that release (found by review).
            raise ValueError(
                f"written by a newer release of mcrelay (its first line is {lines[0]!r}; "
                f"this release reads {BANS_FILE_HEADER!r})"
            )
        raise ValueError(f"not a bans file: its first line is not {BANS_FILE_HEADER!r}")
    if lines[-1] != "":  # said apart (it was said as the header: found by review)
        raise ValueError(f"line {len(lines)}: cut short, with no end of line")
    saved: dict[BanTarget, SavedBan] = {}
    written: set[BanTarget] = set()
    for number, line in enumerate(lines[1:-1], start=2):
        as_written, ban = _parse_ban_line(line, number)
        if as_written in written:
            raise ValueError(f"line {number}: a second ban on {line.partition(' ')[0]}")
        written.add(as_written)
        if ban is None:
            continue
        earlier = saved.get(ban.target)  # an IPv4-mapped one folded onto another's
        if earlier is None and len(saved) == MAX_BANS:  # (counted as they are kept)
            raise ValueError(f"more than {MAX_BANS} bans")
        if earlier is None or earlier.until_wall < ban.until_wall:
            saved[ban.target] = ban
    return list(saved.values())


def _parse_ban_line(line: str, number: int) -> tuple[BanTarget, SavedBan | None]:
    """The target as written, and the ban a line holds: one on an IPv4-mapped address
    is on the IPv4 address it names, as :func:`parse_ban_target` takes it (it was dropped,
    found by review); None for one on another IPv6 address, which the relay never
    matched (earlier versions took them): dropped, it lifts nothing in force."""
    fields = line.split(" ")
    try:
        if len(fields) != 3:
            raise ValueError("not an id, an end and a length")
        ban_id, until_text, seconds_text = fields
        target = _parse_any_target(ban_id)
        if not BAN_SECONDS.fullmatch(seconds_text) or not 0 < float(seconds_text) <= MAX_BAN_S:
            raise ValueError(f"{seconds_text[:30]!r} is not a ban's length")
        if not WALL_TIME.fullmatch(until_text):
            raise ValueError(f"{until_text[:30]!r} is not a Unix time")
        until_wall = float(until_text)
        if not (math.isfinite(until_wall) and until_wall <= MAX_WALL_TIME):
            raise ValueError(f"{until_text[:30]!r} is past year 9999")
    except ValueError as exc:
        raise ValueError(f"line {number}: {exc}") from None
    try:
        folded = _folded(target, ban_id)
    except ValueError:
        return target, None
    return target, SavedBan(folded, until_wall, float(seconds_text))
