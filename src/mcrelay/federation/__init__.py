"""Federation: relays of one cluster act as one group over a NATS bus.

:mod:`mcrelay.federation.bus` bridges nats-py (asyncio, in a thread of its own) to
Trio; the sealed envelopes it carries are :mod:`mcrelay.protocol.federation`'s.
"""
