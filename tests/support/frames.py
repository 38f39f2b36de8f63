"""Legacy frames built in tests."""

from __future__ import annotations

import json

__all__ = ["d1_frame"]


def d1_frame(error_id: str, source: str, error_type: str = "ops_test") -> bytes:
    """A D1 ``errpub_envelope`` frame (legacy-bus.md §1) whose ``error_id`` becomes the event id."""
    body = {
        "message_type": "error_report",
        "source": source,
        "timestamp": "2026-11-21T08:02:16.503872",
        "error_data": {
            "error_id": error_id,
            "error_type": error_type,
            "severity": "high",
            "details": None,
        },
    }
    return b"ERROR:" + json.dumps(body).encode()
