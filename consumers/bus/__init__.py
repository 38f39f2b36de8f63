"""Typed, durable consumers of the ERRBUS stream (DESIGN §8 "Consumers").

``Subscription`` says what to read and how to retry; ``ErrorBusConsumer`` reads it on a
JetStream pull consumer from asyncio (``run(handler)`` or ``async for``) or from sync code
(``start_in_thread``), acks after the handler returns, retries with delayed naks and stores
what keeps failing as a ``ConsumerDeadLetter`` on ``<prefix>.consumer_dlq.<durable>``.
The legacy handler registrations (library A and B) are in ``consumers.legacy_handlers``.
"""

from consumers.bus.consumer import (
    SPARE_DELIVERIES,
    ConsumerError,
    Delivery,
    ErrorBusConsumer,
    Handler,
)
from consumers.bus.records import (
    CONSUMER_DEAD_LETTER_VERSION,
    SKIP_REASONS,
    ConsumerDeadLetter,
    DeadLetterCause,
    DeliveryInfo,
    RawMessage,
    classify,
    decode_dead_letter,
    encode_dead_letter,
)
from consumers.bus.stats import ConsumerMetrics, ConsumerStats
from consumers.bus.subscription import (
    BRIDGED_TYPES,
    CONSUMER_DEAD_LETTER,
    ContractType,
    Subscription,
    consumer_dead_letter_subject,
    filter_subjects,
)

__all__ = [
    "BRIDGED_TYPES",
    "CONSUMER_DEAD_LETTER",
    "CONSUMER_DEAD_LETTER_VERSION",
    "SKIP_REASONS",
    "SPARE_DELIVERIES",
    "ConsumerDeadLetter",
    "ConsumerError",
    "ConsumerMetrics",
    "ConsumerStats",
    "ContractType",
    "DeadLetterCause",
    "Delivery",
    "DeliveryInfo",
    "ErrorBusConsumer",
    "Handler",
    "RawMessage",
    "Subscription",
    "classify",
    "consumer_dead_letter_subject",
    "decode_dead_letter",
    "encode_dead_letter",
    "filter_subjects",
]
