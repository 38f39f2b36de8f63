"""Drop-in for the ZMQ ``PC2ErrorPublisher`` (legacy ``pc2_code/utils/pc2_error_publisher.py``).

Migrate with one line::

    from pc2_code.utils.pc2_error_publisher import PC2ErrorPublisher, create_pc2_error_publisher
    from busclient.compat.pc2_error_publisher import PC2ErrorPublisher, create_pc2_error_publisher

Same names, signatures and call shapes. Each call becomes **one** native ``ErrorEvent``
(``Busbridge-Client-Api: pc2_errpub``) instead of the legacy D2 frame on PC2's :7150 plus, for
``critical``/``high`` or ``send_to_mainpc=True``, a ``CROSS_MACHINE_ERROR`` copy to MainPC: a
native event is visible fleet-wide, so there is nothing to propagate and nothing to dedup.
``propagate_to_mainpc``/``send_to_mainpc``, ``endpoint`` and ``context`` are accepted and unused.

Mapping (as the bridge decodes D2): ``source`` as given, ``error_type`` as given, ``severity``
via the legacy table, ``details`` as passed, ``message`` = ``details`` when it is a string else
the error type. A ``category`` other than the default ``pc2_service`` and a ``message_type``
other than ``error_report`` are kept as extras (``busclient.compat._common.with_extras``).
``publish_pc2_specific_error`` sends the legacy details shape ``{"pc2_component",
"performance_impact", "original_details"}``. Never raises on publish.
"""

from __future__ import annotations

from typing import Any

from busclient.client import BusClient
from busclient.compat._common import shared_client, with_extras
from busclient.compat.error_publisher import publish_envelope

__all__ = ["PC2ErrorPublisher", "create_pc2_error_publisher"]

_API = "pc2_errpub"
_DEFAULT_CATEGORY = "pc2_service"
_DEFAULT_MESSAGE_TYPE = "error_report"


class PC2ErrorPublisher:
    """Stands in for the legacy ZMQ ``PC2ErrorPublisher``; see the module docstring.

    ``client``: the ``BusClient`` to publish with (default: the process's shared client).
    ``close()`` waits up to ``close_flush_secs`` for what was published to be stored.
    """

    close_flush_secs = 2.0

    def __init__(
        self,
        source: str,
        *,
        endpoint: str | None = None,
        context: Any = None,
        propagate_to_mainpc: bool = True,
        client: BusClient | None = None,
    ) -> None:
        self.source = source
        self.endpoint = endpoint
        self.context = context
        self.propagate_to_mainpc = propagate_to_mainpc
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
        category: str = "pc2_service",
        send_to_mainpc: bool | None = None,
    ) -> None:
        """Publish one error (returns ``None``). ``category``: the legacy PC2 category (kept as
        an extra unless it is the default); ``send_to_mainpc``: accepted, unused."""
        extras = {
            "category": None if category == _DEFAULT_CATEGORY else category,
            "message_type": None if message_type == _DEFAULT_MESSAGE_TYPE else message_type,
        }
        publish_envelope(
            self.client,
            _API,
            self.source,
            error_type,
            severity,
            with_extras(details, **extras),
            details,
        )

    def publish_pc2_specific_error(
        self,
        *,
        error_type: str,
        pc2_component: str,
        severity: str = "error",
        details: Any = None,
        performance_impact: str | None = None,
    ) -> None:
        """Publish one error of a PC2 component: ``details`` = ``{"pc2_component",
        "performance_impact", "original_details"}`` as the legacy method built it."""
        enhanced = {
            "pc2_component": pc2_component,
            "performance_impact": performance_impact,
            "original_details": details,
        }
        publish_envelope(self.client, _API, self.source, error_type, severity, enhanced, enhanced)

    def close(self) -> None:
        """Wait (at most ``close_flush_secs``) until published errors are stored."""
        self.client.flush(self.close_flush_secs)

    def __enter__(self) -> PC2ErrorPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_pc2_error_publisher(agent_name: str, **kwargs: Any) -> PC2ErrorPublisher:
    """The legacy factory: ``PC2ErrorPublisher(source=agent_name, **kwargs)``."""
    return PC2ErrorPublisher(source=agent_name, **kwargs)
