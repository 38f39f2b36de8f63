"""busclient: the agent-facing native client of the busbridge error bus.

Agents publish ``contracts.ErrorEvent``s to their machine's sidecar through NATS JetStream
(intake subject ``errbus_intake.<machine>.<source>``), from sync code or asyncio, with a bounded
local buffer while NATS is away. ``busclient.compat`` holds drop-in shims for every legacy
publisher API (ZMQ ``ErrorPublisher``/``PC2ErrorPublisher``, NATS libraries A and B, BaseAgent's
``report_error``). See ``busclient/README.md``.

Imports only ``contracts``, nats-py, msgspec and the standard library (a test checks it).
"""

from busclient.buffer import ClientStats, Outcome
from busclient.client import BusClient, Ticket
from busclient.config import CLIENT_APIS, ClientConfig, resolve_servers
from busclient.events import build_event, coerce_severity

__all__ = [
    "CLIENT_APIS",
    "BusClient",
    "ClientConfig",
    "ClientStats",
    "Outcome",
    "Ticket",
    "build_event",
    "coerce_severity",
    "resolve_servers",
]
