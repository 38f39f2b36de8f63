"""Read a whole stream back after a benchmark run (one place for every bench)."""

from __future__ import annotations

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

__all__ = ["read_all"]


async def read_all(url: str, stream: str = "ERRBUS", subject: str = "errbus.>") -> list[Msg]:
    """Every message of ``stream`` in stream order (pull consumer, no acks); stops early if
    a fetch times out (the stream shrank meanwhile)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        out: list[Msg] = []
        while len(out) < total:
            try:
                out += await sub.fetch(min(5000, total - len(out)), timeout=5)
            except nats.errors.TimeoutError:
                break
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()
