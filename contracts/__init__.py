"""Wire contracts shared by the bridge, consumers and load tests."""

from contracts.codec import contract_name, decode, encode
from contracts.messages import (
    CONTRACT_VERSION,
    BridgeHeartbeat,
    DeadLetter,
    DeadLetterReason,
    Dialect,
    ErrorEvent,
    FloodEnded,
    FloodEvent,
    FloodStarted,
    FloodSummary,
    HealthReport,
    HealthStatus,
    LegacyOrigin,
    Message,
    Severity,
    SpoolEvicted,
    TimestampKind,
    Truncation,
)
from contracts.severity import normalise_severity
from contracts.subjects import Subjects, sanitise_token

__all__ = [
    "CONTRACT_VERSION",
    "BridgeHeartbeat",
    "DeadLetter",
    "DeadLetterReason",
    "Dialect",
    "ErrorEvent",
    "FloodEnded",
    "FloodEvent",
    "FloodStarted",
    "FloodSummary",
    "HealthReport",
    "HealthStatus",
    "LegacyOrigin",
    "Message",
    "Severity",
    "SpoolEvicted",
    "Subjects",
    "TimestampKind",
    "Truncation",
    "contract_name",
    "decode",
    "encode",
    "normalise_severity",
    "sanitise_token",
]
