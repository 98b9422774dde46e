"""The relay: one socket, a profile per datagram, a task per message, workers for RSA.

The receive loop reads the socket until it would block and hands each datagram to
its wire profile, chosen by its first byte (0x4D: the secure profile; the legacy
profile takes any other, when it is served). The profile decodes it and acts
through the relay's services (:class:`mcrelay.core.profile.Services`): the roster,
presence, a message's task in the ``messages`` nursery and its admission. After
admission a message's life is the pipeline of :mod:`mcrelay.daemon.messages`; what
is sent goes through the :class:`~mcrelay.daemon.outbox.Outbox`. Every drop is
counted with its reason.
"""

import ipaddress
import logging
import socket
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.core.bans import Ban, BanList, BanTarget
from mcrelay.core.control import Overloaded
from mcrelay.core.events import EventHub
from mcrelay.core.federation import Federation
from mcrelay.core.members import (
    AddressInUse,
    Departure,
    Identity,
    Left,
    Member,
    Registration,
    Roster,
)
from mcrelay.core.profile import Admitted, Opener, Origin, Profile
from mcrelay.core.ratelimit import SourceLimiter
from mcrelay.core.remotes import Change, Remotes
from mcrelay.core.stats import RelayCounters, Statistics
from mcrelay.daemon.banfile import BanFile
from mcrelay.daemon.legacy.profile import LegacyProfile
from mcrelay.daemon.messages import Messages
from mcrelay.daemon.outbox import Outbox
from mcrelay.daemon.secure.profile import SecureProfile
from mcrelay.daemon.workers import CryptoWorkers
from mcrelay.logs import LineBudget, once_a_minute
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.secure.header import MAGIC
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.settings.config import RelayConfig
from mcrelay.settings.profiles import LEGACY, SECURE
from mcrelay.sockets import MAX_DATAGRAM_BYTES

log = logging.getLogger(__name__)

CLEANUP_INTERVAL_S = 1.0
RECEIVE_BATCH_DATAGRAMS = 64
"""Datagrams handled per turn of the receive loop before it yields."""
PRESENCE_LOG_BURST = 100
PRESENCE_LOG_PER_S = 2.0
"""Joins, leaves, re-keys and moves are logged 100 at once, then 2 a second; the next
line written says how many were not. Spoofed legacy registrations and their DISCONNECTs
wrote 240 lines a second, some 20 million a day (found by review); the events of the
API and the counters still have every one."""


class Relay:
    def __init__(
        self,
        config: RelayConfig,
        sock: socket.socket,
        key: rsa.RSAPrivateKey | None,
        *,
        secure_key: KeyPair | None = None,
        workers: CryptoWorkers | None = None,
        ban_file: BanFile | None = None,
    ):
        """``sock`` is the bound, non-blocking relay socket; ``workers`` run the RSA work;
        ``ban_file`` keeps the bans across restarts (without it they are held in memory).
        The profiles served are the settings' (``served_profiles``); the legacy one needs
        ``key`` (RSA), the secure one ``secure_key``. Every setting reaches the relay's
        parts through :meth:`reconfigure`."""
        self._sock = sock
        self.address: Address = sock.getsockname()[:2]
        self._own_hosts = frozenset({self.address[0], config.interface} - {"0.0.0.0"})
        """The relay's own addresses beside loopback (the one it is bound to, the
        multicast interface's: both need a restart to change), for :meth:`_from_itself`."""
        self.counters = RelayCounters()
        self.ban_file = ban_file
        self.bans = BanList() if ban_file is None else ban_file.bans
        self.events = EventHub()
        self.roster = Roster()
        self.remotes = Remotes()
        """The other relays' members, when this relay federates."""
        self.registrations: Mapping[str, SourceLimiter] = {
            LEGACY: SourceLimiter(),
            SECURE: SourceLimiter(),
        }
        self._receive_errors = once_a_minute()
        self._presence_lines = LineBudget(PRESENCE_LOG_BURST, PRESENCE_LOG_PER_S)
        self.federation: Federation | None = None
        """The federation it joined, if any: told what happens to this relay's members
        and messages as it happens (set before :meth:`run`)."""
        self.outbox = Outbox(
            sock,
            self.counters,
            self.drop,
            lambda: self.config.send_queue_datagrams,
            lambda: self.config.max_send_queue_bytes,
        )
        self._workers = workers if workers is not None else CryptoWorkers()
        self.legacy: LegacyProfile | None = None
        """The legacy profile, when it is served."""
        self.secure: SecureProfile | None = None
        """The secure profile, when it is served."""
        self._profiles: dict[str, Profile] = {}
        self._by_first_byte: dict[int, Profile] = {}
        """Profiles that claim datagrams by their first byte; the rest go to
        :attr:`_default` (the legacy profile, when it is served)."""
        self._default: Profile | None = None
        if LEGACY in config.served_profiles:
            if key is None:
                raise ValueError("the legacy profile is served, and no RSA key was given")
            self.legacy = LegacyProfile(self, key, self._workers)
            self._profiles[LEGACY] = self._default = self.legacy
        if SECURE in config.served_profiles:
            if secure_key is None:
                raise ValueError("the secure profile is served, and no secure key was given")
            self.secure = SecureProfile(self, secure_key)
            self._profiles[SECURE] = self._by_first_byte[MAGIC] = self.secure
        self.messages = Messages(
            roster=self.roster,
            counters=self.counters,
            events=self.events,
            profiles=self._profiles,
            drop=self.drop,
            left=self._announce_left,
            remove=self.remove,
            max_message_bytes=lambda member: (
                self._profiles[member.identity.profile].max_message_bytes
            ),
            max_pending=lambda: self.config.max_pending_relays,
            forward=self._forward,
            start=self.start_message,
        )
        self._nursery: trio.Nursery | None = None
        self._receiving = trio.CancelScope()
        self._stopping = False
        self.drained = trio.Event()
        """Set once receiving has stopped and every message has settled and gone out."""
        self.last_turn = 0.0
        """When the receive loop last read a batch (Trio's clock)."""
        self.receive_waiting = False
        """The receive loop waits for the socket (idle, not stuck: the watchdog looks)."""
        self.reconfigure(config)

    @property
    def fingerprint(self) -> str | None:
        """The RSA key's fingerprint, as legacy clients pin it (when legacy is served)."""
        return None if self.legacy is None else self.legacy.fingerprint

    @property
    def secure_key(self) -> str | None:
        """The secure profile's public key (base64), as secure clients pin it."""
        return None if self.secure is None else self.secure.public_key

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The relay's tasks; after :meth:`stop_receiving`, :attr:`drained` is set once the
        ``messages`` nursery has closed and the send queue is empty (then it idles)."""
        async with trio.open_nursery() as nursery:
            if self.legacy is not None:  # the RSA work is legacy's only
                await nursery.start(self._workers.run)
            for profile in self._profiles.values():
                await nursery.start(profile.run)
            nursery.start_soon(self.outbox.run)
            nursery.start_soon(self._cleanup_loop)
            if self.ban_file is not None:
                await nursery.start(self.ban_file.run)
            async with trio.open_nursery() as messages:
                self._nursery = messages
                messages.start_soon(self._receive_loop)
                messages.start_soon(self.messages.feed_remote)
                task_status.started()
            self._nursery = None
            await self.outbox.wait_empty()
            self.drained.set()

    def statistics(self) -> Statistics:
        legacy = self.legacy
        counters = self.counters.snapshot()
        clients = Counter(member.identity.profile for member in self.roster)
        profiles = {
            name: {
                "clients": clients[name],
                "datagrams_in": counters.datagrams_in_by_profile[name],
                "copies_sent": counters.copies_by_profile[name],
            }
            for name in self._profiles
        }
        if legacy is not None:
            profiles[LEGACY].update(legacy.figures())
        if self.secure is not None:
            profiles[SECURE].update(self.secure.figures())
        return Statistics(
            clients=len(self.roster),
            profiles=profiles,
            reassembly_in_flight=0 if legacy is None else legacy.reassembler.in_flight,
            reassembly_bytes=0 if legacy is None else legacy.reassembler.buffered_bytes,
            pending_relays=self.messages.pending,
            leaves_pending=self.roster.leaves_pending(),
            send_queue=len(self.outbox),
            bans=len(self.bans.active(trio.current_time())),
            ban_writes_failed=0 if self.ban_file is None else self.ban_file.write_failures,
            event_subscribers=self.events.subscribers,
            counters=counters,
        )

    def reconfigure(self, config: RelayConfig) -> None:
        """Apply the settings that can change while running (the caller keeps the rest);
        at start, every setting."""
        self.config = config
        self.roster.max_members = config.max_clients
        self.roster.max_members_per_host = config.max_clients_per_host
        for limiter in self.registrations.values():
            limiter.configure(
                per_source_burst=config.registrations_per_host_burst,
                per_source_per_s=config.registrations_per_host_per_s,
                total_burst=config.registrations_total_burst,
                total_per_s=config.registrations_total_per_s,
            )
        if self.legacy is not None:
            self.legacy.configure(config)
        if self.secure is not None:
            self.secure.configure(config)
        self._workers.resize(config.crypto_workers)

    def stop_receiving(self) -> None:
        """Take no more datagrams; what is already in flight goes on (messages still in
        reassembly end, counted as ``stopped``)."""
        self._stopping = True
        self._receiving.cancel()
        for profile in self._profiles.values():
            profile.stop_receiving()
        for origin in self.messages.drop_queued_remote():
            self.drop(DropReason.STOPPED, origin.address)
        if self.federation is not None:
            self.federation.leaving()

    @property
    def stopping(self) -> bool:
        """Receiving has stopped (:meth:`stop_receiving`): no message starts any more."""
        return self._stopping

    # What operators do (the control API).

    def kick(
        self, member_id: str, ban_s: float | None = None, *, scope: str | None = None
    ) -> list[Member]:
        """An operator's removal; return the members removed (reason ``kick``, or ``ban``
        with ``ban_s``), or being removed (a secure member, once told).

        With ``ban_s`` it is also kept out that long, by ``scope``: ``address`` (a legacy
        member's default), ``host`` (every port; every member of that host goes too) or
        ``key`` (a secure member's default). A secure member's key is banned whatever the
        scope: it is who the member is. ``ValueError`` for ``key`` on a legacy member."""
        member = self.roster.get(member_id)
        if member is None:
            return []
        secure = member.identity.profile == SECURE
        if scope == "key" and not secure:
            raise ValueError("a legacy client has no key to ban: ban its address or host")
        chosen: list[str] = []
        if ban_s is not None:
            now = trio.current_time()
            targets: list[BanTarget] = [member.id] if secure else []
            if scope == "host":
                targets.append(member.address[0])
                chosen = [m.id for m in self.roster if m.address[0] == member.address[0]]
            elif scope == "address" or (scope is None and not secure):
                targets.append(member.address)
            self.bans.check_room(targets, now)  # all of them, or none and no kick
            for target in targets:
                self.bans.ban(target, ban_s, now)
        reason = Departure.KICK if ban_s is None else Departure.BAN
        removed = [self._dismiss(i, reason) for i in dict.fromkeys([member_id, *chosen])]
        return [m for m in removed if m is not None]

    def ban(self, target: BanTarget, ban_s: float) -> tuple[Ban, list[Member]]:
        """An operator's ban of a target, connected or not (an address, a host, a secure
        client's key): the ban, and the members it removed (reason ``ban``), those it
        names here. :class:`~mcrelay.core.bans.TooManyBans` when the list is full."""
        ban = self.bans.ban(target, ban_s, trio.current_time())
        if isinstance(target, tuple):
            banned = [m.id for m in self.roster if m.address == target]
        elif ban.scope == "host":
            banned = [m.id for m in self.roster if m.address[0] == target]
        else:
            banned = [target] if self.roster.get(target) is not None else []
        removed = [self._dismiss(i, Departure.BAN) for i in banned]
        return ban, [m for m in removed if m is not None]

    async def bans_saved(self) -> bool:
        """Whether the bans file holds the bans as they are now, waiting for the write
        that takes them (:meth:`BanFile.wait_saved`); never, without a file."""
        return self.ban_file is not None and await self.ban_file.wait_saved()

    def _dismiss(self, member_id: str, reason: Departure) -> Member | None:
        """An operator's removal: the member, removed now, or once its profile has told
        it (a secure member's NOTICE, as the page has it: it stays a member until then)."""
        member = self.roster.get(member_id)
        if member is not None and self._profiles[member.identity.profile].farewell(member, reason):
            return member
        return self.remove(member_id, reason)

    async def post(
        self, plaintext: bytes, recipients: list[Member], *, federate: bool = False
    ) -> int:
        """Send a message from the relay itself (sender 0.0.0.0:0); return the copies sent.

        Admitted as a member's message is (it counts against ``max_pending_relays``), one
        at a time, else :class:`Overloaded` (counted); a task in the ``messages`` nursery,
        ordered after the relay's earlier posts, so a stop waits for it. ``federate``:
        the other relays of the federation deliver it to their members too."""
        nursery = self._nursery
        if nursery is None or self.stopping:
            raise Overloaded("the relay is stopping")
        turn = self.messages.admit_post()
        copies: list[int] = []

        async def life() -> None:
            copies.append(await self.messages.post(turn, plaintext, recipients, forward=federate))

        nursery.start_soon(life)
        await turn.done.wait()
        return copies[0] if copies else 0

    # What the federation does (federation.link): the other relays' messages and members.

    async def deliver_remote(self, origin: Origin, plaintext: bytes, line: str) -> str | None:
        """A message from another relay, to every member here, in ``line`` (its relay's
        order): queued (once the queue has room), started when there is room in flight;
        or why not (``too_large``: larger than its sender's profile allows here, an
        operator's post larger than max_message_bytes; ``stopped``)."""
        identity = origin.identity
        profile = self._profiles.get(identity.profile) if identity is not None else None
        largest = self.config.max_message_bytes if profile is None else profile.max_message_bytes
        if len(plaintext) > largest:
            return DropReason.TOO_LARGE.value
        if not await self.messages.queue_remote(line, origin, plaintext):
            return DropReason.STOPPED.value  # it stopped (before, or while this one waited)
        return None

    def remote_changes(self, changes: Sequence[Change], line: str) -> None:
        """Tell every member here of other relays' members joining, leaving, moving: after
        the messages of ``line`` (their relay's) in flight, as a local member's leave."""
        self.messages.after_line(line, partial(self._announce_remote, changes))

    def _announce_remote(self, changes: Sequence[Change]) -> None:
        groups = self._by_profile(self.roster)
        for change in changes:
            member = change.member
            relay = member.identity.relay
            if change.event == "joined":
                self.events.publish(
                    "client_joined",
                    client=member.id,
                    fingerprint=member.identity.key_id,
                    rekeyed=change.rekeyed_from is not None,
                    relay=relay,
                )
                for profile, group in groups:
                    if change.rekeyed_from is not None:
                        profile.announce_rekeyed(member, change.rekeyed_from, group)
                    else:
                        profile.announce_joined(member, group)
            elif change.event == "left":
                assert change.reason is not None, "a leave has a reason"
                self.events.publish(
                    "client_left", client=member.id, reason=change.reason, relay=relay
                )
                for profile, group in groups:
                    profile.announce_left(member, group, change.reason)
            else:
                assert change.old is not None
                self.events.publish(
                    "client_moved",
                    client=member.id,
                    address=format_address(member.address),
                    previous=format_address(change.old),
                    relay=relay,
                )
                for profile, group in groups:
                    profile.announce_moved(member, change.old, group)

    def _forward(self, origin: Origin, plaintext: bytes) -> None:
        if self.federation is not None:
            self.federation.relayed(origin, plaintext)

    # The receive path: synchronous from the socket to a message's task.

    async def _receive_loop(self) -> None:
        # No timeout around the wait: a cancel scope per turn cost about 5 us a
        # datagram (bench/README.md, issue 11); the watchdog reads receive_waiting.
        with self._receiving:
            while True:
                self.receive_waiting = True
                try:
                    await trio.lowlevel.wait_readable(self._sock)
                finally:
                    self.receive_waiting = False
                self.last_turn = trio.current_time()
                self._receive_batch()

    def _receive_batch(self) -> None:
        for _ in range(RECEIVE_BATCH_DATAGRAMS):
            try:
                data, source = self._sock.recvfrom(MAX_DATAGRAM_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:  # none expected of a UDP socket; said once a minute at most
                if (held := self._receive_errors.take(trio.current_time())) is not None:
                    log.warning("receive failed: %s (%d more since the last such line)", exc, held)
                return
            address = (source[0], source[1])
            try:
                self.handle_datagram(data, address, trio.current_time())
            except Exception:  # a bug must cost one datagram, not the relay
                log.exception("a datagram from %s broke the relay", format_address(address))
                self.drop(DropReason.INTERNAL_ERROR, address)

    def handle_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.counters.datagrams_in += 1
        self.counters.bytes_in += len(data)
        if source[1] == self.address[1] and self._from_itself(source[0]):
            self.drop(DropReason.OWN_ADDRESS, source)
            return
        if self.bans and self.bans.is_banned(source, now):
            self.drop(DropReason.BANNED, source)
            return
        profile = self._by_first_byte.get(data[0], self._default) if data else self._default
        if profile is None:
            self.drop(DropReason.PROFILE_OFF, source)
            return
        self.counters.datagrams_in_by_profile[profile.name] += 1
        profile.datagram_untrusted(data, source, now)

    def _from_itself(self, host: str) -> bool:
        """Is ``host`` (of a datagram from the relay's port) one of the relay's own? One
        spoofed key from the relay's own address made it a legacy member of itself,
        refreshed by every copy it then sent itself (found by review). Loopback and the
        addresses it was given; not the host's other addresses: from outside, the kernel
        drops a datagram with a local source, so only root on the relay's host can spoof
        one (and root can do worse)."""
        return host in self._own_hosts or ipaddress.ip_address(host).is_loopback

    # The services a profile uses (core.profile.Services).

    def drop(
        self, reason: DropReason, source: Address, detail: object = None, count: int = 1
    ) -> None:
        self.counters.dropped[reason] += count
        self.events.dropped(reason.value, source, count)
        if log.isEnabledFor(logging.DEBUG):
            said = "" if detail is None or detail == "" else f": {detail}"
            log.debug("dropped %s from %s%s", reason, format_address(source), said)

    def notify(self, datagram: bytes, address: Address) -> bool:
        return self.outbox.notify(datagram, address)

    def send(self, datagram: bytes, address: Address) -> bool:
        return self.outbox.send(datagram, address)

    def notify_all(self, notices: Sequence[tuple[bytes, Address]]) -> None:
        self.outbox.notify_all(notices)

    def register(self, identity: Identity, address: Address, now: float) -> None:
        self.take_address(identity.profile, identity.id, address)
        known = self.roster.get(identity.id)
        old = None if known is None else known.identity
        registration, earlier = self.roster.register(identity, address, now)
        if registration is Registration.REFRESHED:
            return
        rekeyed = registration is Registration.REKEYED
        self.log_presence("client %s %s", identity.id, "re-keyed" if rekeyed else "joined")
        self.events.publish(
            "client_joined", client=identity.id, fingerprint=identity.key_id, rekeyed=rekeyed
        )
        member = self.roster.get(identity.id)
        assert member is not None
        others = self.roster.others(member)
        if earlier is not None:
            # The id left with messages in flight and is back: the others see it leave first.
            self._announce_left(earlier, others)
        for profile, group in self._by_profile(others):
            if rekeyed and old is not None:
                profile.announce_rekeyed(member, old, group)
            else:
                profile.announce_joined(member, group)
        if not rekeyed:
            present = [*others, *self.remotes]
            self._profiles[identity.profile].announce_present(member, present)
        if self.federation is not None:
            self.federation.joined(member)

    def remove(self, member_id: str, reason: Departure) -> Member | None:
        """Remove a member; tell every other member it left, once its messages are out."""
        member, left = self.roster.remove(member_id, reason)
        if member is not None:
            self._profiles[member.identity.profile].removed(member, reason)
        if left is not None:
            self._announce_left(left)
        return member

    def move(self, member: Member, address: Address) -> None:
        """(Raises ``AddressInUse`` when another member holds ``address``.)"""
        old = member.address
        if address == old:
            return
        self.take_address(member.identity.profile, member.id, address)
        self.roster.move(member, address)
        self.log_presence("client %s moved from %s", member.id, format_address(old))
        self.events.publish(
            "client_moved",
            client=member.id,
            address=format_address(address),
            previous=format_address(old),
        )
        for profile, group in self._by_profile(self.roster.others(member)):
            profile.announce_moved(member, old, group)
        if self.federation is not None:
            self.federation.moved(member)

    def take_address(
        self, profile: str, member_id: str, address: Address, *, only_check: bool = False
    ) -> None:
        """A member of ``profile`` at ``address``: a legacy registration, or a secure
        handshake or path validation (which prove it receives there). One address is one
        member: while another member holds it, or one that left is still to be announced
        leaving from it (its messages in flight), it is not taken (``AddressInUse``). The
        holder was removed instead: anyone who could read and spoof at an address removed
        a secure member, with a handshake or a path validation of its own key from there
        (found by review).

        But a legacy holder gives way to a secure member (counted ``displaced``; it
        leaves, ``replaced``): its registration proved nothing, and one spoofed datagram
        a client timeout kept a secure client out of its own address for good (found by
        review); whoever could spoof it could remove it anyway (a DISCONNECT). Decision 67
        of protocol.md. ``only_check``: raise as it would, but displace no one yet (a
        secure join checks its rate and room between the two: a legacy member was
        displaced for a join then refused, found by review)."""
        holder = self.roster.at(address)
        if holder is not None:
            if holder.id == member_id:
                return
            if holder.identity.profile != LEGACY or profile == LEGACY:
                raise AddressInUse(f"{format_address(address)} is {holder.id}'s")
            if only_check:
                return
            self.drop(DropReason.DISPLACED, address, holder.id)
            self.remove(holder.id, Departure.REPLACED)
        leaving = self.roster.leaving_from(address)
        if leaving is not None and leaving.id != member_id:
            raise AddressInUse(f"{leaving.id} is still leaving {format_address(address)}")

    def log_presence(self, message: str, *args: object) -> None:
        """A join, leave, re-key, move or replacement, within a budget of lines (see
        :data:`PRESENCE_LOG_BURST`)."""
        held_said = "{held} joins, leaves and moves not logged before this one"
        self._presence_lines.log(log, logging.INFO, trio.current_time(), held_said, message, *args)

    def key_banned(self, member_id: str, now: float) -> bool:
        return bool(self.bans) and self.bans.is_key_banned(member_id, now)

    def address_banned(self, address: Address, now: float) -> bool:
        return bool(self.bans) and self.bans.is_banned(address, now)

    def start_message(self, life: Callable[[], Awaitable[None]]) -> None:
        assert self._nursery is not None, "messages start only until every one has settled"
        self._nursery.start_soon(life)

    def has_room(self, sender: Member) -> bool:
        return self.messages.has_room(sender)

    def room_for(self, sender: Member) -> bool:
        return self.messages.room_for(sender)

    def admit(
        self, sender: Member, opener: Opener, *, acknowledged: bool = False
    ) -> Admitted | None:
        if self.stopping:
            # A secure message completed by a timer (behind one given up) after
            # receiving stopped: no message starts any more.
            self.drop(DropReason.STOPPED, sender.address)
            return None
        return self.messages.admit(sender, opener, acknowledged=acknowledged)

    # Housekeeping.

    async def _cleanup_loop(self) -> None:
        while True:
            await trio.sleep(min(CLEANUP_INTERVAL_S, self.config.client_timeout_s / 4))
            for member in self.roster.idle(trio.current_time(), self.config.client_timeout_s):
                self.remove(member.id, Departure.TIMEOUT)

    def _announce_left(self, left: Left, recipients: Iterable[Member] | None = None) -> None:
        """Tell ``recipients`` (every member by default) that ``left.member`` left."""
        member = left.member
        self.log_presence("client %s left (%s)", member.id, left.reason)
        self.events.publish("client_left", client=member.id, reason=left.reason)
        for profile, group in self._by_profile(self.roster if recipients is None else recipients):
            profile.announce_left(member, group, left.reason)
        if self.federation is not None:
            self.federation.left(member, left.reason)

    def _by_profile(self, members: Iterable[Member]) -> list[tuple[Profile, list[Member]]]:
        groups: defaultdict[str, list[Member]] = defaultdict(list)
        for member in members:
            groups[member.identity.profile].append(member)
        return [(self._profiles[name], group) for name, group in groups.items()]
