"""Read back what a bridge stored: every message of a stream, decoded."""

from __future__ import annotations

from typing import Any

import anyio
import nats
from nats.js.errors import NotFoundError

from contracts.codec import decode
from contracts.messages import Message
from loadtest.stream import read_all

__all__ = ["StoredMessage", "fetch_all", "wait_for_count"]


class StoredMessage:
    """One stored message; ``msg`` is the decoded contract (None when fetched raw)."""

    def __init__(
        self, seq: int, subject: str, headers: dict[str, str], data: bytes, msg: Message | None
    ) -> None:
        self.seq = seq
        self.subject = subject
        self.headers = headers
        self.data = data
        self.msg = msg


async def wait_for_count(
    url: str,
    stream: str,
    count: int,
    timeout_secs: float = 30.0,
    settle_secs: float = 0.5,
    stall_secs: float | None = None,
    **connect: Any,
) -> int:
    """Wait until ``stream`` holds ``count`` messages (then ``settle_secs`` more, to catch extras).

    A stream that does not exist yet counts as empty: a bridge's /healthz answers before its
    first attach has created the stream. With ``stall_secs``, give up early once the count has
    not moved for that long. ``connect``: extra ``nats.connect`` options (credentials, TLS) for
    servers that require them. Raises ``nats.js.errors.NotFoundError`` when the stream still
    does not exist after ``timeout_secs``.
    """
    nc = await nats.connect(url, **connect)
    try:
        js = nc.jetstream()

        async def messages() -> int:
            try:
                return (await js.stream_info(stream)).state.messages
            except NotFoundError:
                return 0

        last, moved_at = -1, anyio.current_time()
        with anyio.move_on_after(timeout_secs):
            while (n := await messages()) < count:
                if n != last:
                    last, moved_at = n, anyio.current_time()
                elif stall_secs is not None and anyio.current_time() - moved_at > stall_secs:
                    break
                await anyio.sleep(0.05)
        await anyio.sleep(settle_secs)
        return (await js.stream_info(stream)).state.messages
    finally:
        await nc.close()


async def fetch_all(
    url: str, stream: str, subject: str = ">", *, raw: bool = False, **connect: Any
) -> list[StoredMessage]:
    """Every message of ``stream`` (matching ``subject``; ``>`` = the stream's first subject) in
    stream order, through ``loadtest.stream.read_all`` (retries through elections); ``connect`` as
    in ``wait_for_count``."""
    if subject == ">":
        nc = await nats.connect(url, **connect)
        try:
            subject = (await nc.jetstream().stream_info(stream)).config.subjects[0]
        finally:
            await nc.close()
    return [
        StoredMessage(
            m.metadata.sequence.stream,
            m.subject,
            dict(m.headers or {}),
            m.data,
            None if raw else decode(m.data),
        )
        for m in await read_all(url, stream, subject, **connect)
    ]
