"""Fakes for unit tests: a transport that records publishes, a manual clock."""

from __future__ import annotations

from bridge.pipeline.acks import NotConnected, PublishRefused
from bridge.pipeline.publish import Outbound

__all__ = ["FakeClock", "FakeTransport", "RecordingSink"]


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


class FakeTransport:
    """Records ``(subject, payload, reply, headers)``; ``connected=False`` raises NotConnected."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str, dict[str, str]]] = []
        self.connected = True
        self.refuse: set[str] = (
            set()
        )  # msg ids the client refuses outright (too large, bad subject)

    async def publish(
        self, subject: str, payload: bytes, reply: str, headers: dict[str, str]
    ) -> None:
        if not self.connected:
            raise NotConnected("fake transport disconnected")
        if headers.get("Nats-Msg-Id") in self.refuse:
            raise PublishRefused("MaxPayloadError: maximum payload exceeded")
        self.sent.append((subject, payload, reply, headers))

    def token(self, index: int) -> int:
        return int(self.sent[index][2].rsplit(".", 1)[1])


class RecordingSink:
    """A runner's sink that accepts everything and keeps it in ``items``, in order."""

    def __init__(self) -> None:
        self.items: list[Outbound] = []

    def submit(self, item: Outbound) -> bool:
        self.items.append(item)
        return True
