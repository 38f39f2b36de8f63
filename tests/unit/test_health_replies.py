"""Every legacy health reply shape of legacy-bus.md §4 -> one normalised status, raw value kept."""

from __future__ import annotations

import json

import pytest

from bridge.health.replies import (
    JSON_REQUEST,
    PLAIN_REQUEST,
    is_request_rejected,
    normalise_reply,
    status_word,
)
from contracts.messages import HealthStatus

H, D, U, K = (
    HealthStatus.HEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNHEALTHY,
    HealthStatus.UNKNOWN,
)


def _base_agent(status: str, health_status: str, **extra: object) -> dict:
    """BaseAgent's REP / HTTP /health reply (common/core/base_agent.py)."""
    return {
        "status": status,
        "ready": True,
        "initialized": True,
        "message": "SystemDigitalTwin is running",
        "timestamp": "2025-08-19T10:00:00.123456",
        "uptime": 3600.5,
        "active_threads": 7,
        "health_checks": {"redis": True},
        "health_details": {},
        "health_status": health_status,
        **extra,
    }


# (reply as sent, http status, status, raw_status, shape)
CASES = [
    pytest.param(_base_agent("ok", "healthy"), None, H, "ok", "base_agent", id="base_agent-ok"),
    pytest.param(
        _base_agent("degraded", "degraded"),
        None,
        D,
        "degraded",
        "base_agent",
        id="base_agent-degraded",
    ),
    pytest.param(
        _base_agent("ok", "degraded"),
        None,
        D,
        "degraded",
        "base_agent",
        id="base_agent-ok-but-health-degraded",
    ),
    pytest.param(
        _base_agent("error", "unhealthy", error="redis down"),
        None,
        U,
        "error",
        "base_agent",
        id="base_agent-error",
    ),
    pytest.param(
        _base_agent("ok", "unknown"),
        None,
        H,
        "ok",
        "base_agent",
        id="base_agent-health-unknown-ignored",
    ),
    pytest.param(
        _base_agent("degraded", "degraded"),
        200,
        D,
        "degraded",
        "base_agent",
        id="base_agent-http-200-degraded",
    ),
    pytest.param(
        {"status": "success", "data": {"status": "ok", "uptime": 12}},
        None,
        H,
        "success",
        "error_bus_service",
        id="error_bus_service-ok",
    ),
    pytest.param(
        {"status": "success", "data": {"status": "degraded"}},
        None,
        D,
        "degraded",
        "error_bus_service",
        id="error_bus_service-inner-degraded",
    ),
    pytest.param(
        {"status": "unhealthy", "message": "model not loaded"},
        None,
        U,
        "unhealthy",
        "status_field",
        id="many-agents-unhealthy",
    ),
    pytest.param(
        {
            "agent_name": "EmotionEngine",
            "health_metrics": {"status": "degraded", "cpu": 91.5},
            "version": "1.0",
            "schema": "WP-07-unified-health",
        },
        None,
        D,
        "degraded",
        "wp07_unified",
        id="wp07-degraded",
    ),
    pytest.param(
        {
            "agent_name": "X",
            "health_metrics": {"status": "healthy"},
            "version": "1.0",
            "schema": "WP-07-unified-health",
        },
        None,
        H,
        "healthy",
        "wp07_unified",
        id="wp07-healthy",
    ),
    pytest.param({"status": "ok"}, 200, H, "ok", "status_field", id="fastapi-ok"),
    pytest.param(
        {"status": "unhealthy", "detail": "db"},
        503,
        U,
        "unhealthy",
        "status_field",
        id="moc-503-unhealthy",
    ),
    pytest.param(
        {"status": "stopped", "since": 3}, None, U, "stopped", "status_field", id="rtap-stopped"
    ),
    pytest.param(
        {"overall_status": "healthy", "issues": [], "warnings": []},
        None,
        H,
        "healthy",
        "gui_aggregate",
        id="gui-healthy",
    ),
    pytest.param(
        {"overall_status": "warning", "issues": [], "warnings": ["slow"]},
        None,
        D,
        "warning",
        "gui_aggregate",
        id="gui-warning",
    ),
    pytest.param(
        {"overall_status": "error", "issues": ["down"], "warnings": []},
        None,
        U,
        "error",
        "gui_aggregate",
        id="gui-error",
    ),
    pytest.param({"status": "online"}, None, H, "online", "status_field", id="online"),
    pytest.param({"status": "SUCCESS"}, None, H, "SUCCESS", "status_field", id="SUCCESS"),
    pytest.param({"status": "healthy"}, None, H, "healthy", "status_field", id="healthy"),
    pytest.param(
        {"status": "HealthStatus.DEGRADED"},
        None,
        D,
        "HealthStatus.DEGRADED",
        "status_field",
        id="enum-repr",
    ),
]


@pytest.mark.parametrize(("reply", "http", "status", "raw", "shape"), CASES)
def test_json_reply_shapes(
    reply: dict, http: int | None, status: HealthStatus, raw: str, shape: str
) -> None:
    v = normalise_reply(json.dumps(reply).encode(), http_status=http)
    assert (v.status, v.raw_status, v.shape) == (status, raw, shape)
    assert v.details == reply  # the whole reply is kept
    assert v.reason == ("http_error" if http and http >= 300 else "")


@pytest.mark.parametrize(
    ("payload", "status", "shape"),
    [
        (b"ok", H, "plain_text"),
        (b'"pong"', H, "plain_text"),
        (b"healthy\n", H, "plain_text"),
        (b"online", H, "plain_text"),
        (b"degraded", D, "plain_text"),
        (b"error", U, "plain_text"),
    ],
)
def test_plain_string_replies(payload: bytes, status: HealthStatus, shape: str) -> None:
    v = normalise_reply(payload)
    assert (v.status, v.shape, v.reason) == (status, shape, "")


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\xff\xfe garbage",
        b"<html><body>It works</body></html>",
        b"[1, 2, 3]",
        b"42",
        b"null",
        b"{}",
        b'{"status": "purple"}',
        b'{"result": true}',
        b"",
    ],
)
def test_garbage_is_unknown_and_unrecognised(payload: bytes) -> None:
    v = normalise_reply(payload)
    assert (v.status, v.reason) == (K, "unrecognised_reply")
    assert v.shape == "unrecognised"


def test_lenient_json_replies_with_nan_are_read() -> None:
    v = normalise_reply(
        b'{"status": "ok", "ready": true, "health_status": "healthy", "uptime": NaN}'
    )
    assert (v.status, v.shape) == (H, "base_agent")
    assert v.details["uptime"] == "NaN"


def test_http_5xx_makes_any_answer_unhealthy_and_4xx_makes_healthy_unknown() -> None:
    assert normalise_reply(b'{"status": "ok"}', http_status=500).status is U
    assert normalise_reply(b"Internal Server Error", http_status=503).status is U
    v = normalise_reply(b'{"status": "ok"}', http_status=404)
    assert (v.status, v.reason) == (K, "http_error")
    assert normalise_reply(b'{"status": "degraded"}', http_status=429).status is D


def test_wp07_rejection_is_detected_raw_or_as_json_string() -> None:
    assert is_request_rejected(b"Unknown health request")
    assert is_request_rejected(b'"Unknown health request"')
    assert not is_request_rejected(b'{"status": "ok"}')
    assert JSON_REQUEST == b'{"action": "health_check"}' and PLAIN_REQUEST == b"health_check"


def test_long_replies_are_cut_for_storage() -> None:
    reply = {"status": "ok", "blob": "x" * 5000}
    v = normalise_reply(json.dumps(reply).encode(), max_reply_bytes=300)
    assert v.status is H
    assert (
        isinstance(v.details, str)
        and len(v.details.encode()) <= 300
        and v.details.startswith('{"status":"ok"')
    )
    text = normalise_reply(b"y" * 1000, max_reply_bytes=256).details
    assert text == "y" * 256


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("OK", H),
        (" Ready ", H),
        ("pong", H),
        ("warning", D),
        ("starting", D),
        ("FAILED", U),
        ("offline", U),
        ("unknown", K),
        ("", K),
        (None, K),
        (True, K),
        ("ErrorSeverity.CRITICAL", U),
    ],
)
def test_status_words(word: object, status: HealthStatus) -> None:
    assert status_word(word) is status
