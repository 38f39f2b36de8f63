"""The data path's NATS and JetStream I/O (the pipeline stages never import ``nats``).

Other NATS users, each in its own module: ``bridge.adapters.nats_connect`` (how every client
connects), ``health_kv`` / ``kv_json`` (KV buckets), ``bridge.fleet_phase`` (fleet phase
bucket), ``bridge.native_reemit`` and ``bridge.parity`` (their own consumers).

``JetStreamLink`` owns one client connection (reconnecting forever), provisions
the stream, publishes with a reply inbox, and turns replies on the ack inbox
into ``AckResult`` values handed to one callback. It decides nothing: retry,
windowing and timeouts belong to ``bridge.pipeline.publish``.

PubAck format (JetStream API): ``{"stream": str, "seq": int, "duplicate": bool}``
or ``{"error": {"code": int, "err_code": int, "description": str}}``; a core
NATS status message with header ``Status: 503`` means no responders (no stream
for the subject, or JetStream not ready, e.g. during a leader election).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig

from bridge.adapters.nats_connect import connect_options
from bridge.config.model import NatsConfig, StorageKind
from bridge.config.model import StreamConfig as StreamSettings
from bridge.errors import BridgeError, ProvisioningError
from bridge.pipeline.acks import AckOutcome, AckResult, NotConnected, PublishRefused, RunCut
from bridge.pipeline.publish import MSG_ID_LINE, WireHeaders, plain_header_value
from bridge.pipeline.stream_loss import DELETED
from contracts.subjects import HEADER_MSG_ID

__all__ = ["JetStreamLink", "parse_ack", "publish_fast", "stream_config_for", "stream_definition"]

log = logging.getLogger(__name__)

_ERROR_LOG_INTERVAL_SECS = 30
_NOT_READY = (
    nats.js.errors.ServiceUnavailableError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
)


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


def parse_ack(msg: Msg) -> AckResult:
    """Turn a reply on the ack inbox into an ``AckResult``. Never raises."""
    headers = msg.headers
    if headers and headers.get("Status") == "503":
        return AckResult(AckOutcome.NO_RESPONDERS, error_code=503, description="no responders")
    try:
        ack = _ack_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        return AckResult(AckOutcome.ERROR, description=f"unreadable PubAck: {exc}")
    if ack.error is not None:
        outcome = AckOutcome.NO_RESPONDERS if ack.error.code == 503 else AckOutcome.ERROR
        return AckResult(
            outcome,
            error_code=ack.error.err_code or ack.error.code,
            description=ack.error.description,
        )
    return AckResult(AckOutcome.DUPLICATE if ack.duplicate else AckOutcome.STORED, seq=ack.seq)


def stream_config_for(settings: StreamSettings, *, allow_batched: bool = False) -> StreamConfig:
    """The nats-py ``StreamConfig`` for our settings (subjects ``<prefix>.>``); with
    ``allow_batched`` also fast-ingest batches (nats-server >= 2.14)."""
    config = StreamConfig(
        name=settings.name,
        subjects=[f"{settings.subject_prefix}.>"],
        storage=StorageType.FILE if settings.storage is StorageKind.FILE else StorageType.MEMORY,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_secs,
        max_age=settings.max_age_secs,
        max_bytes=settings.max_bytes,
        max_msgs=settings.max_msgs,
    )
    if allow_batched:
        config.allow_batched = True
    return config


def stream_definition(settings: StreamSettings) -> str:
    """The stream as JetStream API JSON (what ``nats stream add --config FILE`` reads): the same
    config the bridge provisions, so operators can create or diff it by hand."""
    return json.dumps(stream_config_for(settings).as_dict(), indent=2, sort_keys=True) + "\n"


#: nats-py internals the raw publish path writes through (checked once per client class)
_RAW_ATTRS = ("_send_command", "_flush_queue", "_flush_pending", "stats")
_raw_ok: dict[type, bool] = {}
#: header field names (RFC 7230 token), as nats-py checks them
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: the header section after its ``Nats-Msg-Id`` line (``b"key: value\r\n" ... b"\r\n"``) per
#: tuple of the other ``(key, value)`` items, which repeat (contract, version, origin); None
#: when nats-py would change one of them. ``Nats-Msg-Id`` values are unique per message and
#: never kept. Emptied when full.
_header_tails: dict[tuple[tuple[str, str], ...], bytes | None] = {}
_HEADER_TAILS_MAX = 256
#: subjects ``_hpub_parts`` found printable and without spaces; emptied when full
_valid_subjects: set[str] = set()
_VALID_SUBJECTS_MAX = 4096


def _hpub(
    nc: Client, subject: str, payload: bytes, reply: str, headers: dict[str, str]
) -> bytes | None:
    """The ``HPUB`` protocol command for a message nats-py would send unchanged, or None.

    None (use nats-py's ``publish``) unless: the client has the internals (``_RAW_ATTRS``),
    is connected, not closing or draining; the payload fits ``max_payload``; subject and reply
    are non-empty, printable and have no space (so no whitespace at all: every other whitespace
    character is unprintable); every key is a valid header name and every value is printable
    with no surrounding whitespace (so nats-py's stripping and CR/LF replacement would not
    change it). ``WireHeaders`` carry their header section made by ``OutboundBuilder`` under
    the same rules (``wire``; None: checked and made here). ``timeit``, one process, the four
    bridge headers, 600-byte payload: 2.0 us per message in a plain dict, 1.1 us as
    ``WireHeaders``; 0.57 us per message in ``JetStreamLink.publish_many``, which checks the
    connection once per run (``_raw_max_payload``) and joins the pieces once.
    """
    max_payload = _raw_max_payload(nc)
    if max_payload is None:
        return None
    parts = _hpub_parts(subject, payload, reply, headers, max_payload)
    return None if parts is None else b"".join(parts)


def _raw_max_payload(nc: Client) -> int | None:
    """``nc.max_payload`` when the raw path may write to ``nc`` now (the client has the
    internals, is connected, not closing or draining), else None: the connection's half of
    ``_hpub``'s rules, checked once for a run of messages."""
    ok = _raw_ok.get(type(nc))
    if ok is None:
        ok = _raw_ok[type(nc)] = all(hasattr(nc, a) for a in _RAW_ATTRS)
    if not ok or not nc.is_connected or nc.is_draining_pubs:
        return None
    return nc.max_payload


def _hpub_parts(
    subject: str, payload: bytes, reply: str, headers: dict[str, str], max_payload: int
) -> tuple[bytes, bytes, bytes, bytes] | None:
    """The message's half of ``_hpub``: the command's four pieces (protocol line, header
    section, payload, CRLF), joined by the caller, or None. Subjects that passed are kept
    (``_valid_subjects``); reply subjects differ per message and are checked each time."""
    if len(payload) > max_payload:
        return None
    if subject not in _valid_subjects:
        if not (subject and subject.isprintable()) or " " in subject:
            return None
        if len(_valid_subjects) >= _VALID_SUBJECTS_MAX:
            _valid_subjects.clear()
        _valid_subjects.add(subject)
    if not (reply and reply.isprintable()) or " " in reply:
        return None
    hdr = headers.wire if headers.__class__ is WireHeaders else None  # type: ignore[attr-defined]
    if hdr is None:
        hdr = _header_section(headers)
        if hdr is None:
            return None
    size = len(hdr)
    command = f"HPUB {subject} {reply} {size} {size + len(payload)}\r\n".encode()
    return command, hdr, payload, b"\r\n"


def _header_section(headers: dict[str, str]) -> bytes | None:
    """``headers`` as an ``HPUB`` header section, or None when nats-py would change them
    (the rules of ``_hpub``). The lines after a leading ``Nats-Msg-Id`` are made once per set
    of the other headers (``_header_tails``): ``timeit``, the four bridge headers, 0.92 us
    per call made line by line, 0.75 us so."""
    items = tuple(headers.items())
    if items and items[0][0] == HEADER_MSG_ID:
        msg_id, rest = items[0][1], items[1:]
    elif HEADER_MSG_ID in headers:  # not first: a unique value inside the lines, not kept
        tail = _header_lines(items)
        return None if tail is None else b"NATS/1.0\r\n" + tail
    else:
        msg_id, rest = None, items
    try:
        tail = _header_tails[rest]
    except KeyError:
        tail = _header_lines(rest)
        if len(_header_tails) >= _HEADER_TAILS_MAX:
            _header_tails.clear()
        _header_tails[rest] = tail
    except TypeError:  # an unhashable value: not a str, so not one nats-py sends unchanged
        return None
    if tail is None:
        return None
    if msg_id is None:
        return b"NATS/1.0\r\n" + tail
    if msg_id.__class__ is not str or not plain_header_value(msg_id):
        return None
    return b"".join((MSG_ID_LINE, msg_id.encode(), b"\r\n", tail))


def _header_lines(items: tuple[tuple[str, str], ...]) -> bytes | None:
    """``Key: value\r\n`` per item and the closing ``\r\n``, or None when nats-py would change
    one of them (a key that is not a header name, a value that is not plain)."""
    lines = []
    for key, value in items:
        if not (isinstance(key, str) and _HEADER_KEY.fullmatch(key)):
            return None
        if value.__class__ is not str or not plain_header_value(value):
            return None
        lines.append(f"{key}: {value}\r\n".encode())
    lines.append(b"\r\n")
    return b"".join(lines)


async def publish_fast(
    nc: Client, subject: str, payload: bytes, reply: str, headers: dict[str, str]
) -> None:
    """``nc.publish(subject, payload, reply=reply, headers=headers)``, the same bytes on the wire,
    without nats-py's per-header regex work when ``_hpub`` can build the command. Raises what
    ``nc.publish`` raises."""
    cmd = _hpub(nc, subject, payload, reply, headers)
    if cmd is None:
        await nc.publish(subject, payload, reply=reply, headers=headers)
        return
    await send_commands(nc, [cmd], 1, len(payload))


async def send_commands(nc: Client, pieces: list[bytes], messages: int, payload_bytes: int) -> None:
    """Queue ``pieces`` (``messages`` whole ``HPUB`` commands, ``_hpub`` results or
    ``_hpub_parts`` pieces, in order) as one write to the connection's buffer and flush it as
    ``publish_fast`` does; ``payload_bytes``: their payloads' total for nats-py's
    ``out_bytes``. Raises what ``nc._send_command`` raises."""
    nc.stats["out_msgs"] += messages
    nc.stats["out_bytes"] += payload_bytes
    await nc._send_command(b"".join(pieces))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


#: JetStream API error code of a message get for a sequence with no message
_NO_MESSAGE_FOUND = 10037


class JetStreamLink:
    """One NATS connection used by the bridge.

    ``on_state(connected: bool)`` is called on every connect/disconnect.
    ``publish`` raises ``NotConnected`` when the client cannot even buffer.
    """

    def __init__(
        self,
        cfg: NatsConfig,
        servers: list[str],
        *,
        name: str,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.servers = servers
        self.name = name
        self._on_state = on_state or (lambda connected: None)
        self.nc: Client | None = None
        self.reconnects = 0
        self._last_error, self._last_error_at = "", 0.0

    async def connect(self) -> None:
        """Connect; with reconnects unlimited, nats-py retries an unreachable server until it
        answers (cancel to give up). Raises ``BridgeError`` for a refused connection (auth)."""
        try:
            self.nc = await nats.connect(servers=self.servers, **self._connect_options())
        except (OSError, nats.errors.Error) as exc:
            raise BridgeError(f"cannot connect to NATS {self.servers}: {exc!r}") from exc
        self._on_state(True)

    def _connect_options(self) -> dict[str, Any]:
        return connect_options(
            self.cfg,
            name=self.name,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            error_cb=self._error,
            closed_cb=self._closed,
        )

    async def _disconnected(self) -> None:
        if self.nc is not None:  # None: we are closing on purpose
            log.warning("NATS disconnected; reconnecting (forever)")
        self._on_state(False)

    async def _reconnected(self) -> None:
        self.reconnects += 1
        log.info(
            "NATS reconnected to %s",
            self.nc.connected_url.netloc if self.nc and self.nc.connected_url else "?",
        )
        self._on_state(True)

    async def _error(self, exc: Exception) -> None:
        text, now = repr(exc), time.monotonic()
        if text != self._last_error or now - self._last_error_at > _ERROR_LOG_INTERVAL_SECS:
            log.warning(
                "NATS client error: %s (repeats are logged every %d s)",
                text,
                _ERROR_LOG_INTERVAL_SECS,
            )
            self._last_error, self._last_error_at = text, now

    async def _closed(self) -> None:
        self._on_state(False)

    @property
    def connected(self) -> bool:
        return bool(self.nc and self.nc.is_connected)

    @property
    def max_payload(self) -> int:
        return self.nc.max_payload if self.nc else 1024 * 1024

    async def ensure_stream(
        self, settings: StreamSettings, timeout_secs: float = 30.0, *, allow_batched: bool = False
    ) -> dict[str, Any]:
        """Create the stream, or update it when it differs and ``update_existing``.

        JetStream that is not ready yet (503, no responders, request timeouts: a
        cluster still electing its leader) is retried for up to ``timeout_secs``.
        Returns the stream config as the server reports it. Raises
        ``ProvisioningError`` (e.g. subjects overlapping another stream). ``allow_batched``:
        the stream also takes fast-ingest batches (``bridge.adapters.fast_ingest``).
        """
        deadline = time.monotonic() + timeout_secs
        while True:
            try:
                return await self._provision(settings, allow_batched)
            except _NOT_READY as exc:
                if time.monotonic() > deadline:
                    raise ProvisioningError(
                        f"JetStream not ready for stream {settings.name}: {exc!r}"
                    ) from exc
                log.info("JetStream not ready yet (%r); retrying stream provisioning", exc)
                await anyio.sleep(0.5)

    async def _provision(self, settings: StreamSettings, allow_batched: bool) -> dict[str, Any]:
        assert self.nc is not None
        js = self.nc.jetstream()
        wanted = stream_config_for(settings, allow_batched=allow_batched)
        try:
            info = await js.add_stream(wanted)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # stream name already in use with a different configuration
                raise ProvisioningError(
                    f"cannot create stream {settings.name}: {exc.description}"
                ) from exc
            if not settings.update_existing:
                raise ProvisioningError(
                    f"stream {settings.name} exists with another configuration"
                ) from exc
            info = await self._update(js, wanted)
        except _NOT_READY:
            raise
        except (nats.errors.Error, OSError) as exc:
            raise ProvisioningError(f"cannot create stream {settings.name}: {exc!r}") from exc
        return info.config.as_dict()

    async def _update(self, js: Any, wanted: StreamConfig) -> Any:
        try:
            return await js.update_stream(wanted)
        except nats.errors.Error as exc:
            raise ProvisioningError(f"cannot update stream {wanted.name}: {exc}") from exc

    async def subscribe_acks(self, prefix: str, on_ack: Callable[[int, AckResult], None]) -> None:
        """Deliver every reply on ``<prefix>.<token>`` as ``on_ack(token, result)``."""
        assert self.nc is not None
        cut = len(prefix) + 1

        async def handle(msg: Msg) -> None:
            try:
                token = int(msg.subject[cut:])
            except ValueError:
                return
            on_ack(token, parse_ack(msg))

        await self.nc.subscribe(
            f"{prefix}.*", cb=handle, pending_msgs_limit=-1, pending_bytes_limit=-1
        )

    async def publish(
        self, subject: str, payload: bytes, reply: str, headers: dict[str, str]
    ) -> None:
        """Queue one message on the connection. Raises ``NotConnected`` (retry later) or
        ``PublishRefused`` (the message itself is unacceptable: too large, bad subject).

        Connected, with plain headers (see ``_hpub``), the ``HPUB`` is written with the
        header block built here; nats-py's ``publish`` validates and re-encodes every header
        key and value with regexes, which costs twice the rest of the publish. Otherwise (no
        such client internals, disconnected with a reconnect buffer, odd headers) it is
        nats-py's ``publish``."""
        nc = self.nc
        if nc is None:
            raise NotConnected("not connected to NATS yet")
        try:
            await publish_fast(nc, subject, payload, reply, headers)
        except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionClosedError) as exc:
            raise NotConnected(str(exc) or type(exc).__name__) from exc
        except (nats.errors.MaxPayloadError, nats.errors.BadSubjectError) as exc:
            raise PublishRefused(f"{type(exc).__name__}: {exc}") from exc
        except nats.errors.Error as exc:  # draining, stale connection, ...: try again later
            raise NotConnected(f"{type(exc).__name__}: {exc}") from exc

    async def publish_many(self, messages: list[tuple[str, bytes, str, dict[str, str]]]) -> None:
        """``publish`` for each ``(subject, payload, reply, headers)`` in order, the raw ones
        (``_hpub``) as one write to the connection's buffer. Raises ``RunCut`` with how many
        were queued when one fails as ``publish`` would fail (``NotConnected``,
        ``PublishRefused``)."""
        nc = self.nc
        if nc is None:
            raise RunCut(0, NotConnected("not connected to NATS yet"))
        # the connection's state is checked once, and again after every await
        max_payload = _raw_max_payload(nc)
        pieces: list[bytes] = []
        count = payload_bytes = queued = 0
        for i, (subject, payload, reply, headers) in enumerate(messages):
            parts = (
                None
                if max_payload is None
                else _hpub_parts(subject, payload, reply, headers, max_payload)
            )
            if parts is not None:
                pieces += parts
                count += 1
                payload_bytes += len(payload)
                continue
            if pieces:  # first what was gathered: the order is the run's
                await self._send_commands(nc, pieces, count, payload_bytes, queued)
                pieces, count, payload_bytes = [], 0, 0
            try:
                await self.publish(subject, payload, reply, headers)
            except (NotConnected, PublishRefused) as exc:
                raise RunCut(i, exc) from exc
            queued = i + 1
            max_payload = _raw_max_payload(nc)
        if pieces:
            await self._send_commands(nc, pieces, count, payload_bytes, queued)

    @staticmethod
    async def _send_commands(
        nc: Client, pieces: list[bytes], count: int, payload_bytes: int, queued: int
    ) -> None:
        try:
            await send_commands(nc, pieces, count, payload_bytes)
        except nats.errors.Error as exc:
            cause = NotConnected(f"{type(exc).__name__}: {exc}")
            raise RunCut(queued, cause) from exc

    async def stream_bounds(self, stream: str) -> tuple[int, int]:
        """``(first_seq, last_seq)`` of ``stream`` (``bridge.pipeline.stream_loss.StreamReader``).
        Raises ``NotConnected`` when NATS cannot answer."""
        info = await self._js_call(lambda js: js.stream_info(stream))
        return info.state.first_seq, info.state.last_seq

    async def msg_id_at(self, stream: str, seq: int) -> str:
        """``Nats-Msg-Id`` of the message at ``seq`` of ``stream`` (``""`` without one;
        ``stream_loss.DELETED`` when there is no message there). Raises ``NotConnected``."""
        msg = await self._js_call(lambda js: js.get_msg(stream, seq=seq), _NO_MESSAGE_FOUND)
        if msg is None:
            return DELETED
        return (msg.headers or {}).get(HEADER_MSG_ID, "")

    async def _js_call(self, call: Callable[[Any], Any], none_on_code: int = 0) -> Any:
        """``call(jetstream context)``; None for the API error ``none_on_code``; every other
        failure (not connected, timeout, no stream, JetStream not ready) as ``NotConnected``."""
        nc = self.nc
        if nc is None or not nc.is_connected:
            raise NotConnected("not connected to NATS")
        try:
            return await call(nc.jetstream(timeout=5.0))
        except nats.js.errors.APIError as exc:
            if none_on_code and exc.err_code == none_on_code:
                return None
            raise NotConnected(f"JetStream API error {exc.err_code}: {exc.description}") from exc
        except (nats.errors.Error, OSError) as exc:
            raise NotConnected(f"{type(exc).__name__}: {exc}") from exc

    async def probe(self, timeout_secs: float = 2.0) -> bool:
        """True when JetStream answers an account info request in time."""
        if not self.connected:
            return False
        assert self.nc is not None
        try:
            await self.nc.jetstream(timeout=timeout_secs).account_info()
        except (nats.errors.Error, OSError):
            return False
        return True

    async def close(self) -> None:
        """Flush what is buffered and close. Idempotent. Never raises for a connection the
        server already dropped (nats-py's close drains the socket: ``ConnectionResetError``
        when the server went away meanwhile); what was not acknowledged stays in the spool."""
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.flush(timeout=2)
            except (nats.errors.Error, OSError):
                pass
            try:
                await nc.close()
            except (nats.errors.Error, OSError) as exc:
                log.info("NATS connection closed with %s: %s", type(exc).__name__, exc)
