"""The relay's core, which knows no wire profile: members and presence, bans, rate
limits, operators' events and the counters. A wire profile (``mcrelay.daemon.legacy``)
plugs in through :mod:`mcrelay.core.profile`."""
