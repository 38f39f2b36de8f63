"""HealthReport and BridgeHeartbeat: round trip, schemas, both directions of compatibility, subjects, keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest

from bridge.pipeline.outbound import OutboundBuilder
from contracts import BridgeHeartbeat, HealthReport, HealthStatus, Subjects, decode, encode
from contracts.health_keys import agent_key, bridge_key, key_kind
from contracts.schema import SCHEMA_DIR
from contracts.subjects import HEADER_CONTRACT, HEADER_MSG_ID, HEADER_ORIGIN

NOW = datetime(2026, 11, 21, 8, 2, 16, 503000, tzinfo=UTC)

REPORT = HealthReport(
    event_id="r1",
    machine="mainpc",
    service="SystemDigitalTwin",
    status=HealthStatus.DEGRADED,
    checked_at=NOW,
    raw_status="degraded",
    reply_shape="base_agent",
    latency_secs=0.003,
    method="zmq_req",
    endpoint="tcp://127.0.0.1:8220",
    details={"status": "degraded", "uptime": 1.5},
    interval_secs=30.0,
    reported_by="mainpc",
    group="foundation_services",
)
HEARTBEAT = BridgeHeartbeat(
    event_id="hb-1",
    bridge_id="pc2",
    machine="pc2",
    sent_at=NOW,
    status=HealthStatus.HEALTHY,
    version="0.1.0",
    phase="dual",
    started_at=NOW,
    interval_secs=10.0,
    received_per_sec=12.5,
    spool_messages=3,
    nats_connected=True,
    zmq_publishers_connected=4,
    agents_probed=9,
)


@pytest.mark.parametrize("msg", [REPORT, HEARTBEAT], ids=["health_report", "bridge_heartbeat"])
def test_round_trip_through_the_tagged_union(msg: HealthReport | BridgeHeartbeat) -> None:
    assert decode(encode(msg)) == msg
    wire = json.loads(encode(msg))
    assert wire["type"] == type(msg).__struct_config__.tag and wire["schema_version"] == 1


@pytest.mark.parametrize("name", ["health_report", "bridge_heartbeat"])
def test_json_schema_file_exists_and_requires_the_core_fields(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    body = next(iter(schema["$defs"].values()))
    assert {"event_id", "machine", "status", "type"} <= set(body["required"])
    assert body["properties"]["status"]["$ref"].endswith("HealthStatus")


@pytest.mark.parametrize("msg", [REPORT, HEARTBEAT], ids=["health_report", "bridge_heartbeat"])
def test_an_older_reader_decodes_a_newer_message(msg: HealthReport | BridgeHeartbeat) -> None:
    """A newer writer appended fields: today's reader ignores them."""
    wire = json.loads(encode(msg))
    wire["added_in_a_later_version"] = {"x": [1, 2]}
    wire["another_one"] = 3.5
    assert decode(json.dumps(wire).encode()) == msg


class _NewerHealthReport(
    HealthReport, frozen=True, kw_only=True, tag="health_report", tag_field="type"
):
    """A later HealthReport with one appended defaulted field (how the contract may evolve)."""

    probe_attempts: int = 1


class _NewerHeartbeat(
    BridgeHeartbeat, frozen=True, kw_only=True, tag="bridge_heartbeat", tag_field="type"
):
    memory_rss_bytes: int = 0


def test_a_newer_reader_decodes_an_older_message() -> None:
    """Today's messages lack the newer reader's appended fields: they take their defaults."""
    report = msgspec.json.decode(encode(REPORT), type=_NewerHealthReport)
    assert (
        report.probe_attempts == 1
        and report.service == "SystemDigitalTwin"
        and report.status is HealthStatus.DEGRADED
    )
    beat = msgspec.json.decode(encode(HEARTBEAT), type=_NewerHeartbeat)
    assert beat.memory_rss_bytes == 0 and beat.agents_probed == 9


def test_todays_reader_decodes_a_minimal_older_message_with_defaults() -> None:
    """Only the required fields, as the first writers might have sent: every appended field defaults."""
    minimal = {
        "type": "health_report",
        "event_id": "x",
        "machine": "pc2",
        "service": "A",
        "status": "unknown",
        "checked_at": "2026-11-21T08:02:16Z",
    }
    report = decode(json.dumps(minimal).encode())
    assert isinstance(report, HealthReport)
    assert (
        report.raw_status,
        report.latency_secs,
        report.details,
        report.interval_secs,
        report.schema_version,
    ) == (None, None, None, 0.0, 1)
    beat = decode(
        b'{"type":"bridge_heartbeat","event_id":"h","bridge_id":"b","machine":"m",'
        b'"sent_at":"2026-11-21T08:02:16Z","status":"healthy"}'
    )
    assert isinstance(beat, BridgeHeartbeat) and beat.phase == "" and beat.not_ready_reasons == []


def test_unknown_status_value_is_refused() -> None:
    wire = json.loads(encode(REPORT))
    wire["status"] = "purple"
    with pytest.raises(msgspec.ValidationError):
        decode(json.dumps(wire).encode())


def test_subjects_and_headers_of_health_messages() -> None:
    builder = OutboundBuilder(Subjects(), "mainpc", 1024 * 1024)
    report, beat = builder.build(REPORT), builder.build(HEARTBEAT)
    assert report.subject == "errbus.health.mainpc.SystemDigitalTwin"
    assert beat.subject == "errbus.bridge.pc2.heartbeat"
    assert (
        report.headers[HEADER_CONTRACT] == "health_report" and report.headers[HEADER_MSG_ID] == "r1"
    )
    assert beat.headers[HEADER_ORIGIN] == "mainpc"


def test_kv_keys() -> None:
    assert bridge_key("MainPC", "MainPC") == "bridge.MainPC.MainPC"
    assert agent_key("pc2", "Vision Agent.v2") == "agent.pc2.Vision_Agent_v2"
    assert key_kind("agent.pc2.X") == "agent" and key_kind("bridge.a.b") == "bridge"
    assert key_kind("phase.fleet") is None and key_kind("agent.too.many.tokens") is None
