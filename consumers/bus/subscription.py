"""What a consumer of ERRBUS asks for: ``Subscription`` and the subject filters built from it.

A ``Subscription`` is one immutable value: the durable consumer's name, which messages it
wants (machines, severities, sources, contract types) and how it retries (``max_deliver``,
``backoff_secs``, ``ack_wait_secs``). ``filter_subjects`` turns the selection into JetStream
filter subjects built from ``contracts.subjects.Subjects`` (the stream's subject scheme):

* ``error_event`` -> ``<prefix>.error.<machine>.<severity>.<source>``
* ``dead_letter`` -> ``<prefix>.dlq.<machine>``
* ``flood_started``/``flood_summary``/``flood_ended`` -> ``<prefix>.flood.<machine>.<source>``
* ``health_report`` -> ``<prefix>.health.<machine>.<service>`` (``sources`` select services)
* ``bridge_heartbeat`` -> ``<prefix>.bridge.<machine>.heartbeat``; ``phase_changed`` and
  ``spool_evicted`` -> ``<prefix>.bridge.<machine>.<type>``
* ``consumer_dead_letter`` -> ``<prefix>.consumer_dlq.<durable>`` (``dead_letters_of``
  selects durables): only when asked for by name, so a consumer never re-reads its own
  dead letters by default.

An empty selection list means "all". ``machines`` applies to every family, ``sources`` only
to the families whose subject carries a source or service, ``severities``/``min_severity``
to the contracts that carry a severity (``error_event`` in the subject, flood events by
their ``severity`` field, checked by the consumer).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

import msgspec

from contracts.messages import ContractName, Severity
from contracts.subjects import Subjects, sanitise_token

__all__ = [
    "BRIDGED_TYPES",
    "CONSUMER_DEAD_LETTER",
    "ContractType",
    "DeliverFrom",
    "Subscription",
    "UnknownPolicy",
    "consumer_dead_letter_subject",
    "family_wildcards",
    "filter_subjects",
    "subject_matches",
]

#: every contract type tag (``contracts.messages.ContractName``)
ContractType = ContractName
CONSUMER_DEAD_LETTER = "consumer_dead_letter"
#: every contract the bridge stores (all but the consumers' own dead letters): the default
BRIDGED_TYPES: tuple[str, ...] = tuple(
    t for t in get_args(ContractType) if t != CONSUMER_DEAD_LETTER
)

#: where a new durable starts: every stored message, or only those stored after its creation
DeliverFrom = Literal["all", "new"]
#: what happens to a message of an unknown type, a newer ``schema_version`` or an invalid
#: body: acked and counted without the handler (``skip``), or handed over as a ``RawMessage``
UnknownPolicy = Literal["skip", "raw"]

_DURABLE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FAMILY = {
    "error_event": "error",
    "dead_letter": "dlq",
    "dead_letter_summary": "dlq",
    "flood_started": "flood",
    "flood_summary": "flood",
    "flood_ended": "flood",
    "health_report": "health",
    "bridge_heartbeat": "bridge:heartbeat",
    "phase_changed": "bridge:phase_changed",
    "spool_evicted": "bridge:spool_evicted",
    "consumer_dead_letter": "consumer_dlq",
}


class Subscription(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One durable consumer of ERRBUS: what it reads and how it retries.

    ``durable``: the JetStream durable name (``[A-Za-z0-9_-]``, 1..64). Instances using the
    same name share the work (each message goes to one of them); different names each get
    every message (fan-out). Also the last token of the dead-letter subject.

    Selection (empty = all): ``machines``, ``sources`` (agent / service names, compared after
    ``sanitise_token`` like the subjects), ``severities`` or ``min_severity`` (not both),
    ``types`` (contract ``type`` tags; default ``BRIDGED_TYPES``), ``dead_letters_of``
    (durables whose ``consumer_dead_letter`` records to read, when that type is selected).

    Retry: the handler is called at most ``max_deliver`` times per message (1..1000); after a
    failed attempt ``n`` the message is nak'd with the delay ``backoff_secs[n-1]`` (the last
    value repeats; every value > 0 s, so there is never an immediate redelivery); when attempt
    ``max_deliver`` fails, the message is dead-lettered and acked. ``ack_wait_secs``: how long
    the server waits for an ack before redelivering (kept alive by in-progress acks while the
    handler runs). ``max_ack_pending``: unacknowledged messages the durable allows across all
    its instances. ``batch_size``: messages per pull; ``fetch_timeout_secs``: how long a pull
    waits for messages (also the longest ``stop()`` waits for an idle pull).

    ``deliver``: where a **new** durable starts (``all`` or ``new``); an existing durable
    resumes after its last acknowledged message whatever this says. ``unknown``:
    ``UnknownPolicy``. ``watch_advisories``: also dead-letter messages the server gave up on
    (JetStream max-deliveries advisory).

    Raises ``ValueError`` on an invalid value (also when decoded with ``msgspec.convert``,
    then as ``msgspec.ValidationError``).
    """

    durable: str
    machines: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    severities: tuple[Severity, ...] = ()
    min_severity: Severity | None = None
    types: tuple[ContractType, ...] = BRIDGED_TYPES  # type: ignore[assignment]
    dead_letters_of: tuple[str, ...] = ()
    max_deliver: int = 5
    backoff_secs: tuple[float, ...] = (1.0, 5.0, 30.0, 60.0)
    ack_wait_secs: float = 30.0
    max_ack_pending: int = 1000
    batch_size: int = 10
    fetch_timeout_secs: float = 2.0
    deliver: DeliverFrom = "all"
    unknown: UnknownPolicy = "skip"
    watch_advisories: bool = True

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid Subscription: " + "; ".join(problems))

    def wanted_severities(self) -> tuple[Severity, ...]:
        """The severities selected, least severe first; ``()`` means all of them."""
        if self.severities:
            wanted = set(self.severities)
        elif self.min_severity is not None:
            wanted = {s for s in Severity if s.rank >= self.min_severity.rank}
        else:
            return ()
        if len(wanted) == len(Severity):
            return ()
        return tuple(sorted(wanted, key=lambda s: s.rank))

    def backoff_for(self, attempt: int) -> float:
        """Seconds to wait before redelivering after failed attempt ``attempt`` (1-based)."""
        return self.backoff_secs[min(max(attempt, 1), len(self.backoff_secs)) - 1]


def _problems(s: Subscription) -> list[str]:
    checks = [
        (_DURABLE.match(s.durable) is None, f"durable {s.durable!r} must match {_DURABLE.pattern}"),
        (not 1 <= s.max_deliver <= 1000, "max_deliver must be in 1..1000"),
        (not s.backoff_secs, "backoff_secs needs at least one value"),
        (any(not b > 0 for b in s.backoff_secs), "every backoff_secs value must be > 0"),
        (not s.ack_wait_secs > 0, "ack_wait_secs must be > 0"),
        (s.max_ack_pending < 1, "max_ack_pending must be >= 1"),
        (not 1 <= s.batch_size <= 1000, "batch_size must be in 1..1000"),
        (not s.fetch_timeout_secs > 0, "fetch_timeout_secs must be > 0"),
        (not s.types, "types needs at least one contract type"),
        (bool(s.severities) and s.min_severity is not None, "severities and min_severity"),
        (any(_DURABLE.match(d) is None for d in s.dead_letters_of), "dead_letters_of names"),
    ]
    return [text for failed, text in checks if failed]


def consumer_dead_letter_subject(subjects: Subjects, durable: str) -> str:
    """``<prefix>.consumer_dlq.<durable>``: where ``durable`` stores its dead letters."""
    return f"{subjects.prefix}.consumer_dlq.{sanitise_token(durable)}"


def filter_subjects(sub: Subscription, subjects: Subjects) -> list[str]:
    """Non-overlapping JetStream filter subjects selecting what ``sub`` asks for, in a stable
    order, e.g. ``["errbus.error.PC2.error.*", "errbus.error.PC2.critical.*"]``."""
    machines = _tokens(sub.machines)
    sources = _tokens(sub.sources)
    severities = [s.value for s in sub.wanted_severities()] or ["*"]
    p = subjects.prefix
    out: list[str] = []
    for family in dict.fromkeys(_FAMILY[t] for t in sub.types):
        for m in machines:
            if family == "error":
                out += [subjects.errors(m, sev, src) for sev in severities for src in sources]
            elif family == "dlq":
                out.append(subjects.dead_letters(m))
            elif family in ("flood", "health"):
                out += [f"{p}.{family}.{m}.{src}" for src in sources]
            elif family.startswith("bridge:"):
                out.append(f"{p}.bridge.{m}.{family.split(':')[1]}")
        if family == "consumer_dlq":
            out += [f"{p}.consumer_dlq.{d}" for d in _tokens(sub.dead_letters_of)]
    return list(dict.fromkeys(out))


def family_wildcards(sub: Subscription, subjects: Subjects) -> list[str]:
    """One wildcard per subject family of ``sub.types`` (``<prefix>.error.>``, ...): the server
    side filter when ``filter_subjects`` would be too many; the consumer then filters."""
    p = subjects.prefix
    families = dict.fromkeys(_FAMILY[t].split(":")[0] for t in sub.types)
    return [f"{p}.{family}.>" for family in families]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


def _tokens(values: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(sanitise_token(v) for v in values)) or ["*"]
