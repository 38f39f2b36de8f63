"""NATS -> ZMQ in ``nats_primary``: NATS-native events re-emitted for legacy subscribers.

An ordered JetStream consumer (deliver new) on ``republish.native_subject``
(default ``<prefix>.error.<machine>.>``) reads the events migrated agents
publish straight to NATS. Messages with a ``Busbridge-Origin`` header crossed
ZMQ through a bridge already (legacy subscribers saw their frames byte for
byte), so they are skipped: an event never crosses the same bridge twice. The
others are encoded as D1 frames carrying the re-emitting bridge's mark
(``bridge.legacy.reemit``), which every bridge's ingest drops if the frame
comes back. Skips are counted in ``busbridge_native_reemit_skipped_total{reason}``.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import msgspec
from nats.js.api import ConsumerConfig, DeliverPolicy

from bridge.adapters.republish import LegacyRepublisher
from bridge.legacy.reemit import encode_d1
from bridge.metrics import Metrics
from contracts.codec import decode
from contracts.messages import ErrorEvent
from contracts.subjects import HEADER_ORIGIN

__all__ = ["NativeReemitter"]

log = logging.getLogger(__name__)


class NativeReemitter:
    """``run()`` until cancelled; raises nats errors when the consumer cannot be created."""

    def __init__(
        self,
        js: Any,
        stream: str,
        subject: str,
        republisher: LegacyRepublisher,
        bridge_id: str,
        metrics: Metrics,
    ) -> None:
        self._js = js
        self._stream = stream
        self.subject = subject
        self._pub = republisher
        self._bridge_id = bridge_id
        self._m = metrics
        self.reemitted = 0

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        sub = await self._js.subscribe(
            self.subject,
            stream=self._stream,
            config=config,
            ordered_consumer=True,
            cb=self._on_msg,
            inactive_threshold=30.0,
        )
        log.info(
            "re-emitting NATS-native events on %s to the legacy republish socket", self.subject
        )
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await sub.unsubscribe()

    async def _on_msg(self, msg: Any) -> None:
        if (msg.headers or {}).get(HEADER_ORIGIN):
            self._m.native_skipped.labels("bridged").inc()
            return
        try:
            ev = decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._m.native_skipped.labels("not_a_contract").inc()
            return
        if not isinstance(ev, ErrorEvent):
            self._m.native_skipped.labels("not_an_error_event").inc()
            return
        self._pub.send(encode_d1(ev, self._bridge_id))
        self._m.republished.labels("native").inc()
        self.reemitted += 1
