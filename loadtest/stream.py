"""Read a whole stream back after a run: one reader for every bench, scenario and test."""

from __future__ import annotations

from typing import Any

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

__all__ = ["read_all"]

# A cluster that just lost a node (meta or stream leader election) answers consumer creates
# and fetches late or with 503 for a few seconds: retry those until this deadline.
RETRY_WINDOW_SECS = 30.0
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.NoRespondersError,
)


async def read_all(
    url: str | list[str],
    stream: str = "ERRBUS",
    subject: str = "errbus.>",
    *,
    retry_window_secs: float = RETRY_WINDOW_SECS,
    **connect: Any,
) -> list[Msg]:
    """Every message of ``stream`` matching ``subject``, in stream order, each once.

    Reads through an ephemeral R1 in-memory pull consumer without acks, so it needs no quorum
    beyond the stream's own, as many messages as the consumer had pending when created.
    Consumer creation and fetches that time out or get a 503 (an election in progress) are
    retried until ``retry_window_secs`` pass without progress; then the read stops and returns
    what it has (the caller's count check then fails loudly). ``connect``: extra
    ``nats.connect`` options (credentials, TLS).
    """
    servers = url if isinstance(url, list) else [url]
    nc = await nats.connect(servers=servers, **connect)
    try:
        js = nc.jetstream()
        out: list[Msg] = []
        deadline = anyio.current_time() + retry_window_secs
        while True:
            config = _config(out[-1].metadata.sequence.stream + 1 if out else None)
            sub = await _retrying(
                deadline,
                lambda config=config: js.pull_subscribe(subject, stream=stream, config=config),
            )
            try:
                left = (
                    await _retrying(deadline, sub.consumer_info)
                ).num_pending  # matching ``subject``
                while left > 0:
                    try:
                        batch = await sub.fetch(min(5000, left), timeout=5)
                    except _TRANSIENT:
                        break  # a new consumer from the last sequence read, or give up at the deadline
                    out += batch
                    left -= len(batch)
                    deadline = (
                        anyio.current_time() + retry_window_secs
                    )  # progress: a fresh retry window
                else:
                    return out
            finally:
                await _quietly(sub.unsubscribe())
            if anyio.current_time() > deadline:
                return out
    finally:
        await nc.close()


def _config(start_seq: int | None) -> ConsumerConfig:
    if start_seq is None:
        policy = {"deliver_policy": DeliverPolicy.ALL}
    else:
        policy = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start_seq}
    return ConsumerConfig(ack_policy=AckPolicy.NONE, num_replicas=1, mem_storage=True, **policy)


async def _retrying(deadline: float, call: Any) -> Any:
    while True:
        try:
            return await call()
        except _TRANSIENT:
            if anyio.current_time() > deadline:
                raise
            await anyio.sleep(0.5)


async def _quietly(aw: Any) -> None:
    try:
        await aw
    except Exception:  # the connection or consumer may already be gone; nothing left to release
        pass
