"""The migration view: who still publishes the old way (DESIGN §8, "who is left").

Each bridge keeps, per ``(source, transport)``, when it first and last saw an event and how
many, and writes a ``MigrationReport`` to the KV bucket ``busbridge_migration`` under key
``<machine>.<bridge_id>`` (``migration_key``); ``busbridge migration`` and ``/phase`` read it.

``transport`` values:

* ``zmq:<dialect>`` - a legacy ZMQ publisher on :7150 (``errpub_envelope``, ``pc2_topic``, ...);
* ``nats:library_a`` / ``nats:library_b`` - the legacy NATS libraries on ``errors.>``;
* ``native:<client api>`` - ``busclient``; the API is ``native`` or the legacy API its drop-in
  shim stands in for (``errpub``, ``pc2_errpub``, ``library_a``, ``library_b``, ``base_agent``):
  migrated on the wire, but the code still calls the legacy API.

Times are UTC; a report holds at most the bridge's ``migration.max_sources`` rows (least
recently seen dropped first, counted in ``dropped_sources``).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from contracts.subjects import sanitise_token

__all__ = [
    "LEGACY_TRANSPORTS",
    "MigrationReport",
    "SourceSeen",
    "decode_report",
    "encode_report",
    "is_legacy",
    "migration_key",
]

#: transport prefixes that count as "still publishing the old way"
LEGACY_TRANSPORTS = ("zmq:", "nats:")


class SourceSeen(msgspec.Struct, frozen=True, kw_only=True):
    """One source on one transport, as one bridge saw it. ``count`` since the bridge started."""

    source: str
    transport: str
    first_seen: datetime
    last_seen: datetime
    count: int


class MigrationReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one bridge saw, written every ``migration.report_interval_secs``."""

    machine: str
    bridge_id: str
    written_at: datetime
    started_at: datetime
    sources: list[SourceSeen]
    dropped_sources: int = 0
    schema_version: int = 1


def is_legacy(transport: str) -> bool:
    """True for a ZMQ dialect or a legacy NATS library (not for ``native:*``)."""
    return transport.startswith(LEGACY_TRANSPORTS)


def migration_key(machine: str, bridge_id: str) -> str:
    return f"{sanitise_token(machine)}.{sanitise_token(bridge_id)}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MigrationReport)


def encode_report(report: MigrationReport) -> bytes:
    return _encoder.encode(report)


def decode_report(data: bytes) -> MigrationReport:
    """Raises ``msgspec.DecodeError`` / ``ValidationError`` for a value of another shape."""
    return _decoder.decode(data)
