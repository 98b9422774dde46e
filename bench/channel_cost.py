"""The secure channel on its own (``mcrelay.protocol.secure.channel``), no crypto, no socket.

    .venv/bin/python bench/channel_cost.py            # cost, then lossy: about 30 s
    .venv/bin/python bench/channel_cost.py cost
    .venv/bin/python bench/channel_cost.py lossy

cost: a client channel streams MESSAGES bodies to a relay channel, lossless, the
frames of each DATA handed over as objects, the clock moving 20 us per round.
Reported per message, median of ROUNDS: the CPU of both channels together (send,
frames_to_send, receive, next_event on each side), and, as the baseline measured in
the same run, the CPU to encode and decode the same DATAs' frames (what the session
adds around the channel, minus the AEAD); the DATAs each way per message and the
frames per DATA.

lossy: the tests' in-memory link (tests/protocol/secure/link.py): 5 ms one way, 2 %
duplication, 25 % reordering, 5 % and 10 % loss, a handshake round trip of 10 ms.
Messages go one way every 20 ms of simulated time (so that queueing behind the
window does not hide the channel's latency); reported: retransmitted fragments per
message, and p50/p99 of delivery time from a message's first transmission.
Deterministic (seeded), simulated time: the figures are the channel's, not the machine's.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mcrelay.protocol.secure.channel import Channel, ChannelFrame, Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.frames import (
    MAX_FRAGMENT_BYTES,
    Abandon,
    Ack,
    Fragment,
    decode_frames_untrusted,
    encode_frames,
)
from protocol.secure.link import CLIENT, RELAY, Link

MESSAGES = 20_000
ROUNDS = 5
TICK_S = 20e-6


def channel_frames(plaintext: bytes) -> list[ChannelFrame]:
    frames = decode_frames_untrusted(plaintext).frames
    return [frame for frame in frames if isinstance(frame, Fragment | Ack | Abandon)]


def stream(size: int, messages: int) -> tuple[dict[str, float], list[list[ChannelFrame]]]:
    """One round, the frames handed over as objects: the channels' CPU per message, the
    DATA counts, and every DATA's frames (for the codec baseline)."""
    sender = Channel(Role.CLIENT, peer_epoch=2, initial_rtt_s=0.0002)
    receiver = Channel(Role.RELAY, peer_epoch=1, initial_rtt_s=0.0002)
    body = bytes([1]) + bytes(size - 1)
    datas: list[list[ChannelFrame]] = []
    ways = {"out": 0, "back": 0}
    queued = delivered = 0
    now = 0.0
    start = time.process_time()
    while delivered < messages:
        while queued < messages and sender.can_send:
            sender.send(body, now)
            queued += 1
        while frames := sender.frames_to_send(now):
            datas.append(frames)
            ways["out"] += 1
            receiver.receive(frames, now, epoch=1)
        while (event := receiver.next_event()) is not None:
            delivered += isinstance(event, MessageDelivered)
        while frames := receiver.frames_to_send(now):
            datas.append(frames)
            ways["back"] += 1
            sender.receive(frames, now, epoch=2)
        while sender.next_event() is not None:
            pass
        now += TICK_S
    cpu = time.process_time() - start
    assert sender.statistics().retransmissions == 0
    figures = {
        "channel_us": cpu / messages * 1e6,
        "datas_out": ways["out"] / messages,
        "datas_back": ways["back"] / messages,
        "frames_per_data": sum(map(len, datas)) / len(datas),
    }
    return figures, datas


def codec(datas: list[list[ChannelFrame]], messages: int) -> float:
    """The baseline: CPU per message to encode and decode the same DATAs' frames."""
    start = time.process_time()
    for frames in datas:
        channel_frames(encode_frames(frames))
    return (time.process_time() - start) / messages * 1e6


def cost() -> None:
    print(f"cost: median of {ROUNDS} rounds, CPU us per message (both channels together)")
    print(
        "| body bytes | fragments | messages | channels | codec (baseline) | channels / codec "
        "| DATAs out / msg | DATAs back / msg | frames / DATA |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in (100, 1000, 16 * MAX_FRAGMENT_BYTES, 58 * MAX_FRAGMENT_BYTES):
        messages = MESSAGES if size <= 1000 else MESSAGES // 40
        rounds = []
        for _ in range(ROUNDS):
            figures, datas = stream(size, messages)
            figures["codec_us"] = codec(datas, messages)
            rounds.append(figures)
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        fragments = -(-size // MAX_FRAGMENT_BYTES)
        print(
            f"| {size} | {fragments} | {messages} | {med['channel_us']:.1f} "
            f"| {med['codec_us']:.1f} | {med['channel_us'] / med['codec_us']:.2f} "
            f"| {med['datas_out']:.3f} | {med['datas_back']:.3f} "
            f"| {med['frames_per_data']:.1f} |"
        )


def lossy_run(fragments: int, loss: float, seed: int, messages: int) -> tuple[list[float], int]:
    link = Link(seed=seed, loss=loss, duplicate=0.02, reorder=0.25)
    size = (fragments - 1) * MAX_FRAGMENT_BYTES + 100
    sent = 0
    next_send = 0.0

    def done() -> bool:
        nonlocal sent, next_send
        while sent < messages and link.now >= next_send and link.client.can_send:
            link.send(CLIENT, bytes([1]) + sent.to_bytes(4, "big") + bytes(size - 5))
            sent += 1
            next_send += 0.020
        relay = link.sides[RELAY]
        return len(relay.delivered) == messages and link.client.statistics().in_flight == 0

    while not done():
        time = link.next_time()
        if time is None or time > next_send:
            link.now = next_send
        link.step()
    relay = link.sides[RELAY]
    first_sent = link.sides[CLIENT].first_sent
    latencies = [
        at - first_sent[int.from_bytes(event.body[1:5], "big")]
        for at, event in relay.events
        if isinstance(event, MessageDelivered)
    ]
    assert [int.from_bytes(body[1:5], "big") for body in relay.delivered] == list(range(messages))
    return latencies, link.client.statistics().retransmissions


def lossy() -> None:
    print("lossy: 5 ms one way, 2 % duplication, 25 % reordering; 10 seeds x 100 messages")
    print("| fragments | loss | retransmitted fragments / message | p50 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for fragments in (2, 4, 16, 58):
        for loss in (0.05, 0.10):
            latencies: list[float] = []
            retransmissions = 0
            for seed in range(10):
                got, again = lossy_run(fragments, loss, seed, 100)
                latencies += got
                retransmissions += again
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1e3
            p99 = latencies[int(len(latencies) * 0.99)] * 1e3
            print(
                f"| {fragments} | {loss:.0%} | {retransmissions / len(latencies):.2f} "
                f"| {p50:.0f} | {p99:.0f} | {latencies[-1] * 1e3:.0f} |"
            )


if __name__ == "__main__":
    which = sys.argv[1:] or ["cost", "lossy"]
    for name in which:
        {"cost": cost, "lossy": lossy}[name]()
