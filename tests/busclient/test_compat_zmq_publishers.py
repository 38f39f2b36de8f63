"""The ZMQ publisher shims (``ErrorPublisher``, ``PC2ErrorPublisher``) driven with the legacy call
shapes, read back from the intake stream."""

from __future__ import annotations

import re

from busclient.compat.error_publisher import ErrorPublisher, create_mainpc_error_publisher
from busclient.compat.pc2_error_publisher import PC2ErrorPublisher, create_pc2_error_publisher
from contracts.messages import Severity
from tests.busclient.conftest import Intake, assert_native, delivered

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_error_publisher_call_shapes(shim_env: Intake) -> None:
    pub = ErrorPublisher("MainPC.service_registry", endpoint="tcp://pc2:7150", context=object())
    pub.publish_error(
        error_type="memory_scheduler_timeout",
        severity="low",
        details={"endpoint": "tcp://192.168.100.17:7140", "attempt": 5},
    )
    # SystemDigitalTwin's shape: the exception text as details
    pub.publish_error(error_type="db_error", severity="critical", details="connection refused")
    pub.publish_error(error_type="plain")  # default severity "error", no details
    pub.publish_error(error_type="alert", severity="HIGH", message_type="critical_alert")
    pub.publish_error(error_type="odd", severity="urgent", details=["a", 1])
    pub.close()
    with create_mainpc_error_publisher("face_recognition") as factory_pub:
        factory_pub.publish_error(error_type="camera_lost", severity="medium")
    stored = delivered(shim_env)
    events = [assert_native(s, api="errpub", source="MainPC.service_registry") for s in stored[:5]]
    low, text, plain, alert, odd = events
    assert (low.severity, low.error_type, low.message) == (
        Severity.INFO,
        "memory_scheduler_timeout",
        "memory_scheduler_timeout",
    )
    assert low.details == {"endpoint": "tcp://192.168.100.17:7140", "attempt": 5}
    assert (text.severity, text.message, text.details) == (
        Severity.CRITICAL,
        "connection refused",
        "connection refused",
    )
    assert (plain.severity, plain.message, plain.details) == (Severity.ERROR, "plain", None)
    assert alert.severity is Severity.ERROR
    assert alert.details == {"details": None, "message_type": "critical_alert"}
    assert (odd.severity, odd.details) == (Severity.ERROR, ["a", 1])  # unknown -> error
    assert all(_UUID4.match(e.event_id) for e in events)  # the legacy error_id form
    assert len({e.event_id for e in events}) == 5
    camera = assert_native(stored[5], api="errpub", source="MainPC.face_recognition")
    assert (camera.error_type, camera.severity) == ("camera_lost", Severity.WARNING)


def test_pc2_error_publisher_call_shapes(shim_env: Intake) -> None:
    pub = create_pc2_error_publisher("MemoryOrchestrator", propagate_to_mainpc=True)
    # high severity: the legacy class sent a PC2_ERROR frame and a CROSS_MACHINE copy; one event
    pub.publish_error(error_type="cache_miss_storm", severity="high", details={"misses": 900})
    pub.publish_error(
        error_type="disk_full",
        severity="critical",
        details="no space left",
        category="memory_ops",
        send_to_mainpc=False,
    )
    pub.publish_pc2_specific_error(
        error_type="oom",
        pc2_component="memory_orchestrator",
        severity="fatal",
        details={"rss_mb": 11000},
        performance_impact="severe",
    )
    pub.close()
    PC2ErrorPublisher("VisionProcessingAgent", endpoint="tcp://x:7150").publish_error(
        error_type="frame_drop"
    )
    stored = delivered(shim_env)
    assert len(stored) == 4
    storm, disk, oom = (
        assert_native(s, api="pc2_errpub", source="MemoryOrchestrator") for s in stored[:3]
    )
    assert (storm.severity, storm.error_type, storm.message, storm.details) == (
        Severity.ERROR,
        "cache_miss_storm",
        "cache_miss_storm",
        {"misses": 900},
    )
    assert (disk.severity, disk.message) == (Severity.CRITICAL, "no space left")
    assert disk.details == {"details": "no space left", "category": "memory_ops"}
    assert (oom.severity, oom.error_type) == (Severity.CRITICAL, "oom")
    assert oom.details == {
        "pc2_component": "memory_orchestrator",
        "performance_impact": "severe",
        "original_details": {"rss_mb": 11000},
    }
    vision = assert_native(stored[3], api="pc2_errpub", source="VisionProcessingAgent")
    assert (vision.error_type, vision.severity, vision.details) == (
        "frame_drop",
        Severity.ERROR,
        None,
    )
