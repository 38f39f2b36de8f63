"""ClientConfig from arguments and environment; severity coercion; cutting an event to size."""

from __future__ import annotations

import enum
import socket

import pytest

from busclient import ClientConfig, build_event, coerce_severity, resolve_servers
from busclient.compat.library_a import ErrorSeverity as LibraryASeverity
from busclient.events import fit_payload
from busclient.publisher import redact_url
from contracts.codec import encode
from contracts.messages import Severity


class DataModelsSeverity(str, enum.Enum):
    CRITICAL = "critical"


def test_servers_come_from_arguments_then_busbridge_then_legacy_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BUSBRIDGE_NATS_URL", raising=False)
    monkeypatch.delenv("NATS_SERVERS", raising=False)
    assert resolve_servers() == ("nats://127.0.0.1:4222",)
    monkeypatch.setenv("NATS_SERVERS", "nats://a:4222, nats://b:4222")
    assert resolve_servers() == ("nats://a:4222", "nats://b:4222")
    monkeypatch.setenv("BUSBRIDGE_NATS_URL", "nats://c:4222")
    assert resolve_servers() == ("nats://c:4222",)
    assert resolve_servers(["nats://d:4222"]) == ("nats://d:4222",)
    assert resolve_servers("nats://e:1,nats://f:2") == ("nats://e:1", "nats://f:2")


def test_config_from_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BUSBRIDGE_MACHINE", "BUSBRIDGE_SUBJECT_PREFIX", "AGENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    plain = ClientConfig.from_env()
    assert (plain.machine, plain.prefix, plain.source) == (
        socket.gethostname(),
        "errbus",
        "unknown",
    )
    monkeypatch.setenv("BUSBRIDGE_MACHINE", "pc2")
    monkeypatch.setenv("BUSBRIDGE_SUBJECT_PREFIX", "bus.test")
    monkeypatch.setenv("AGENT_NAME", "agent_x")
    config = ClientConfig.from_env(source="explicit", max_buffered_events=5)
    assert (config.machine, config.prefix, config.source) == ("pc2", "bus.test", "explicit")
    assert config.subjects.intake("pc2", "a.b") == "bus.test_intake.pc2.a_b"
    with pytest.raises(ValueError, match="max_buffered_events"):
        ClientConfig.from_env(max_buffered_events=0)
    with pytest.raises(ValueError, match="legacy"):
        ClientConfig.from_env(prefix="errors")
    with pytest.raises(TypeError, match="bogus"):
        ClientConfig.from_env(bogus=1)


def test_urls_are_redacted_in_logs() -> None:
    assert redact_url("nats://user:secret@host:4222") == "nats://***@host:4222"
    assert redact_url("nats://host:4222") == "nats://host:4222"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ERROR", Severity.ERROR),
        ("high", Severity.ERROR),
        ("medium", Severity.WARNING),
        ("low", Severity.INFO),
        ("fatal", Severity.CRITICAL),
        ("ErrorSeverity.WARNING", Severity.WARNING),
        (LibraryASeverity.FATAL, Severity.CRITICAL),
        (LibraryASeverity.DEBUG, Severity.DEBUG),
        (DataModelsSeverity.CRITICAL, Severity.CRITICAL),
        (Severity.INFO, Severity.INFO),
        (None, Severity.ERROR),
        ({"not": "a severity"}, Severity.ERROR),
        ("urgent", Severity.ERROR),
    ],
)
def test_severity_coercion(raw: object, expected: Severity) -> None:
    assert coerce_severity(raw) is expected


def test_fit_payload_cuts_details_then_message() -> None:
    event = build_event(
        machine="m", source="s", error_type="t", message="y" * 5_000, details={"b": "x" * 5_000}
    )
    data = encode(event)
    assert fit_payload(event, data, len(data)) == (event, data)
    cut = fit_payload(event, data, 6_000)
    assert cut is not None
    small, payload = cut
    assert len(payload) <= 6_000 and payload == encode(small)
    assert small.truncated is not None and small.truncated.fields == ["details"]
    assert small.truncated.kept_bytes == len(payload)
    assert small.message == event.message and isinstance(small.details, str)
    both = fit_payload(event, data, 1_500)
    assert both is not None and both[0].truncated is not None
    assert both[0].truncated.fields == ["details", "message"] and len(both[1]) <= 1_500
    assert both[0].message == "y" * len(both[0].message)
    assert fit_payload(event, data, 100) is None
