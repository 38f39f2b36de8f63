"""Drop-in for the ZMQ ``ErrorPublisher`` (legacy ``main_pc_code/agents/error_publisher.py``).

Migrate with one line::

    from main_pc_code.agents.error_publisher import ErrorPublisher      # before
    from busclient.compat.error_publisher import ErrorPublisher         # after

Same names, signatures and call shapes (``create_mainpc_error_publisher`` too). Instead of the
legacy D1 frame (``ERROR:`` + envelope on a ZMQ PUB to :7150) each ``publish_error`` becomes one
native ``ErrorEvent`` (``Busbridge-Client-Api: errpub``), mapped the way the bridge decodes the
D1 frame: ``source`` as given, ``error_type`` as given, ``severity`` via the legacy table
(``critical|high|medium|low``, default ``error``), ``details`` as passed (dict, string or
``None``), ``message`` = ``details`` when it is a string (SystemDigitalTwin passes
``details=str(e)``), else the error type; ``message_type="critical_alert"`` is kept as an extra
(``busclient.compat._common.with_extras``). ``endpoint`` and ``context`` are accepted and
unused (there is no ZMQ socket). Never raises on publish, like the legacy class.
"""

from __future__ import annotations

from typing import Any

from busclient.client import BusClient
from busclient.compat._common import legacy_id, shared_client, with_extras

__all__ = ["ErrorPublisher", "create_mainpc_error_publisher", "publish_envelope"]

_API = "errpub"
_DEFAULT_MESSAGE_TYPE = "error_report"


class ErrorPublisher:
    """Stands in for the legacy ZMQ ``ErrorPublisher``; see the module docstring.

    ``client``: the ``BusClient`` to publish with (default: the process's shared client for
    the environment's NATS servers). ``close()`` waits up to ``close_flush_secs`` for what was
    published to be stored (the legacy socket had ``LINGER 0`` and lost it).
    """

    close_flush_secs = 2.0

    def __init__(
        self,
        source: str,
        *,
        endpoint: str | None = None,
        context: Any = None,
        client: BusClient | None = None,
    ) -> None:
        self.source = source
        self.endpoint = endpoint
        self.context = context
        self._client = client

    @property
    def client(self) -> BusClient:
        return self._client or shared_client()

    def publish_error(
        self,
        *,
        error_type: str,
        severity: str = "error",
        details: Any = None,
        message_type: str = "error_report",
    ) -> None:
        """Publish one error (returns ``None``, as the legacy method). ``severity``: any legacy
        spelling; ``details``: any JSON-like value (a string becomes the message too)."""
        extra_type = None if message_type == _DEFAULT_MESSAGE_TYPE else message_type
        publish_envelope(
            self.client,
            _API,
            self.source,
            error_type,
            severity,
            with_extras(details, message_type=extra_type),
            details,
        )

    def close(self) -> None:
        """Wait (at most ``close_flush_secs``) until published errors are stored."""
        self.client.flush(self.close_flush_secs)

    def __enter__(self) -> ErrorPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_envelope(
    client: BusClient,
    api: str,
    source: str,
    error_type: Any,
    severity: Any,
    details: Any,
    raw_details: Any,
) -> None:
    """One event the way the bridge decodes a D1/D2 envelope: ``message`` = ``raw_details``
    when it is a string, else ``error_type``; a fresh legacy-style ``error_id`` as event id."""
    client.report(
        error_type,
        raw_details if isinstance(raw_details, str) else error_type,
        severity=severity,
        source=source,
        details=details,
        event_id=legacy_id(),
        client_api=api,
    )


def create_mainpc_error_publisher(agent_name: str) -> ErrorPublisher:
    """The legacy factory: a publisher with ``source="MainPC.<agent_name>"``."""
    return ErrorPublisher(source=f"MainPC.{agent_name}")
