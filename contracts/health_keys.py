"""Keys of the fleet health KV bucket (default ``busbridge_health``), shared by writers and readers.

* ``bridge.<machine>.<bridge_id>`` - the latest ``BridgeHeartbeat`` of a bridge;
* ``agent.<machine>.<service>`` - the latest ``HealthReport`` of a legacy agent.

Tokens are sanitised like subject tokens (``contracts.subjects.sanitise_token``),
which also keeps them within the KV key alphabet. Values are the contracts'
JSON (``contracts.codec``); the bucket's ``max_age`` is the TTL after which a
key that is no longer written disappears.
"""

from __future__ import annotations

from contracts.subjects import sanitise_token

__all__ = ["AGENT", "BRIDGE", "agent_key", "bridge_key", "key_kind"]

BRIDGE = "bridge"
AGENT = "agent"


def bridge_key(machine: str, bridge_id: str) -> str:
    return f"{BRIDGE}.{sanitise_token(machine)}.{sanitise_token(bridge_id)}"


def agent_key(machine: str, service: str) -> str:
    return f"{AGENT}.{sanitise_token(machine)}.{sanitise_token(service)}"


def key_kind(key: str) -> str | None:
    """``bridge``, ``agent``, or ``None`` for a key of neither kind."""
    kind = key.split(".", 1)[0]
    return kind if kind in (BRIDGE, AGENT) and key.count(".") == 2 else None
