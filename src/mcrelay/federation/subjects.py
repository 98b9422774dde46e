"""The NATS subjects of a cluster, and which envelope kinds go on each.

Cluster ``C``: ``mcrelay.C.msg`` messages; ``mcrelay.C.presence`` joins, leaves, moves
and the periodic snapshots; ``mcrelay.C.hello`` a (re)connecting relay's request for
snapshots, answered on its ``mcrelay.C.inbox.NAME``; ``mcrelay.C.kick.NAME`` kicks
forwarded to relay ``NAME`` (request/reply).
"""

from dataclasses import dataclass

from mcrelay.protocol.federation.envelope import Kind

EXPECTED_KINDS = {
    "msg": {Kind.MSG},
    "presence": {Kind.PRESENCE, Kind.SNAPSHOT},
    "hello": {Kind.SNAPSHOT_REQUEST},
    "inbox": {Kind.SNAPSHOT},
    "kick": {Kind.KICK},
}


@dataclass(frozen=True, slots=True)
class Subjects:
    cluster: str
    relay: str

    @property
    def msg(self) -> str:
        return f"mcrelay.{self.cluster}.msg"

    @property
    def presence(self) -> str:
        return f"mcrelay.{self.cluster}.presence"

    @property
    def hello(self) -> str:
        return f"mcrelay.{self.cluster}.hello"

    @property
    def inbox(self) -> str:
        return f"mcrelay.{self.cluster}.inbox.{self.relay}"

    def kick(self, relay: str) -> str:
        return f"mcrelay.{self.cluster}.kick.{relay}"

    def subscribed(self) -> list[str]:
        """What this relay listens to."""
        return [self.msg, self.presence, self.hello, self.inbox, self.kick(self.relay)]

    def name(self, subject: str) -> str:
        """``msg``, ``presence``, ``hello``, ``inbox`` or ``kick`` for a subscribed one."""
        return subject.split(".")[2]
