"""Federation's envelopes ("mcrelay federation 1"), sans-I/O.

Relays of one cluster exchange sealed envelopes over a NATS bus: :mod:`.envelope`
seals and opens them under the cluster key, :mod:`.bodies` encodes what they carry,
:mod:`.streams` tells which may be acted on (order, gaps, replays, restarts). The
normative description is ``docs/federation.md`` (section "Envelopes"), with vectors
in ``docs/federation-vectors.json`` (made by :mod:`.vectors`).
"""
