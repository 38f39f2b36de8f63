"""Alert rules of the console, the ``AlertFired`` contract, and how an alert is fired once per fleet.

Design note
-----------
Rules (``AlertRule``, kinds in ``RULE_KINDS``), the legacy ones first:

* ``new_issue``: the first event of a fingerprint the console has not seen before;
* ``regression``: an event of an issue that was resolved (``IssueState.resolved_seq`` below
  the event's stream sequence);
* ``agent_frequency``: more than ``threshold`` events of one agent (machine, source) within
  ``window_secs`` (the WP-10 console's AGENT_FLOOD: more than 20 per agent in 5 minutes);
* ``issue_frequency``: more than ``threshold`` events of one issue within ``window_secs``;
* ``severity``: an event at ``min_severity`` or above (default: any critical).

``RuleEngine`` (pure, no I/O, no clock: the events' ``received_at`` is the time) sees every
event of the stream in stream order, the loaded backlog included, and returns the
``AlertFired`` values due. Its state per (rule, key) is the sliding window of receive times
and the end of the cooldown (``cooldown_secs``, default the window; ``new_issue`` and
``regression`` fire once per issue / per resolution). So every console that read the same
stream computes the same alerts with the same ``alert_id``.

**Once per fleet**: every console evaluates (no leader to lose), and an alert fires only at
the console that wins ``kv.create("fired.<alert_id>")`` in the alerts KV bucket
(``busbridge_console_alerts``, history 1, ``max_age`` = ``alerts_ttl_secs``): creating a key
that exists fails, so exactly one console publishes the alert and calls the webhooks, whatever
the number of consoles and open browsers. Only events stored after the console started are
fired for (``Firing.live_from_seq``); the backlog only warms the windows up. The published
alert also carries ``alert_id`` as ``Nats-Msg-Id``, so a retried publish is stored once.

Publishing: ``<prefix>.alert.<rule>`` in the ERRBUS stream, JSON of ``AlertFired`` (tag
``alert_fired``, header ``Busbridge-Contract: alert_fired``); every console reads it back
from the stream to show it. Webhooks: ``POST`` of the same JSON (``application/json``) to each
``WebhookConfig.url`` from the firing console, ``attempts`` tries ``backoff_secs`` apart,
each bounded by ``timeout_secs``; the outcome is logged and kept for the page.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import aiohttp
import msgspec
from msgspec import Meta

from contracts.messages import ErrorEvent, Severity
from contracts.subjects import (
    HEADER_CONTRACT,
    HEADER_CONTRACT_VERSION,
    HEADER_MSG_ID,
    sanitise_token,
)

__all__ = [
    "ALERT_FIRED",
    "ALERT_FIRED_VERSION",
    "RULE_KINDS",
    "AlertFired",
    "AlertRule",
    "AlertsConfig",
    "Firing",
    "RuleEngine",
    "WebhookConfig",
    "alert_subject",
    "decode_alert",
    "default_rules",
    "encode_alert",
    "post_webhook",
]

log = logging.getLogger(__name__)

ALERT_FIRED = "alert_fired"
ALERT_FIRED_VERSION = 1
RuleKind = Literal["new_issue", "regression", "agent_frequency", "issue_frequency", "severity"]
RULE_KINDS: tuple[str, ...] = (
    "new_issue",
    "regression",
    "agent_frequency",
    "issue_frequency",
    "severity",
)
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class AlertFired(msgspec.Struct, frozen=True, kw_only=True, tag=ALERT_FIRED, tag_field="type"):
    """An alert rule fired (published on ``<prefix>.alert.<rule>``; defined here until it joins
    ``contracts.messages``).

    ``alert_id``: deterministic (``<rule>.<key>.<stream seq>``), also the ``Nats-Msg-Id``.
    ``rule``/``kind``: the rule's name and kind. ``summary``: one line for people.
    ``severity``: of the triggering event. ``fingerprint``/``machine``/``source``/``error_type``:
    what it is about; ``count`` events within ``window_secs`` against ``threshold`` (frequency
    rules). ``event_seq``/``event_id``: the event that made it fire; ``event_at``: its
    ``received_at``; ``fired_at``: when the console fired it (UTC). ``fired_by``: ``<host>:<pid>``
    of that console.
    """

    alert_id: str
    rule: str
    kind: str
    summary: str
    severity: Severity
    fired_at: datetime
    event_at: datetime
    fingerprint: str = ""
    machine: str = ""
    source: str = ""
    error_type: str = ""
    count: int = 0
    threshold: int = 0
    window_secs: float = 0.0
    event_seq: int = 0
    event_id: str = ""
    fired_by: str = ""
    schema_version: int = ALERT_FIRED_VERSION


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AlertFired)


def encode_alert(alert: AlertFired) -> bytes:
    return _encoder.encode(alert)


def decode_alert(data: bytes) -> AlertFired:
    """Raises ``msgspec.DecodeError``/``ValidationError`` on anything else."""
    return _decoder.decode(data)


def alert_subject(prefix: str, rule: str) -> str:
    """``<prefix>.alert.<rule>``."""
    return f"{prefix}.alert.{sanitise_token(rule)}"


def alert_headers(alert: AlertFired) -> dict[str, str]:
    return {
        HEADER_MSG_ID: alert.alert_id,
        HEADER_CONTRACT: ALERT_FIRED,
        HEADER_CONTRACT_VERSION: str(ALERT_FIRED_VERSION),
    }


class AlertRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One rule. ``threshold``: fires when **more than** this many events fall in ``window_secs``
    (frequency kinds). ``min_severity``: the ``severity`` kind's level; other kinds also fire
    only for events at or above it when set. ``cooldown_secs``: after firing for a key, not
    again for this long (default: ``window_secs``; for ``severity`` 300 s per fingerprint).
    ``webhook``: also POST to the webhooks."""

    name: Name
    kind: RuleKind
    enabled: bool = True
    threshold: Annotated[int, Meta(ge=0)] = 0
    window_secs: Annotated[float, Meta(gt=0)] = 300.0
    min_severity: Severity | None = None
    cooldown_secs: Annotated[float, Meta(ge=0)] | None = None
    webhook: bool = True

    def cooldown(self) -> float:
        if self.cooldown_secs is not None:
            return self.cooldown_secs
        return 300.0 if self.kind == "severity" else self.window_secs


class WebhookConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A generic JSON webhook: the alert's JSON is POSTed to ``url``."""

    url: str
    timeout_secs: Annotated[float, Meta(gt=0)] = 5.0
    attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    backoff_secs: Annotated[float, Meta(ge=0)] = 1.0


def default_rules() -> list[AlertRule]:
    """New issue, regression, AGENT_FLOOD (more than 20 per agent in 5 min), any critical."""
    return [
        AlertRule(name="new_issue", kind="new_issue"),
        AlertRule(name="regression", kind="regression"),
        AlertRule(name="agent_flood", kind="agent_frequency", threshold=20, window_secs=300.0),
        AlertRule(name="issue_burst", kind="issue_frequency", threshold=100, window_secs=60.0),
        AlertRule(name="critical", kind="severity", min_severity=Severity.CRITICAL),
    ]


class AlertsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``rules`` (default ``default_rules()``), ``webhooks``, the dedupe bucket and its TTL."""

    rules: list[AlertRule] = msgspec.field(default_factory=default_rules)
    webhooks: list[WebhookConfig] = []
    kv_bucket: Name = "busbridge_console_alerts"
    ttl_secs: Annotated[float, Meta(gt=0)] = 7 * 24 * 3600.0


@dataclass
class _Window:
    times: deque[float] = field(default_factory=deque)
    quiet_until: float = float("-inf")


class RuleEngine:
    """Evaluates ``rules`` over events in stream order (module note). ``resolved_seq(fp)``
    gives the sequence an issue was resolved at (0: not resolved)."""

    def __init__(self, rules: list[AlertRule], resolved_seq: Callable[[str], int]) -> None:
        self.rules = [r for r in rules if r.enabled]
        self._resolved_seq = resolved_seq
        self._windows: dict[tuple[str, str], _Window] = {}
        self._seen: set[str] = set()
        self._regressed: set[tuple[str, int]] = set()

    def observe(self, seq: int, ev: ErrorEvent, fingerprint: str) -> list[AlertFired]:
        """The alerts due for event ``ev`` stored at ``seq`` (``fired_at`` = its receive time)."""
        new_issue = fingerprint not in self._seen
        self._seen.add(fingerprint)
        out = []
        for rule in self.rules:
            if rule.min_severity is not None and ev.severity.rank < rule.min_severity.rank:
                continue
            alert = self._check(rule, seq, ev, fingerprint, new_issue)
            if alert is not None:
                out.append(alert)
        return out

    def _check(
        self, rule: AlertRule, seq: int, ev: ErrorEvent, fp: str, new_issue: bool
    ) -> AlertFired | None:
        at = ev.received_at.timestamp()
        agent = f"{sanitise_token(ev.machine)}.{sanitise_token(ev.source)}"
        if rule.kind == "new_issue":
            return self._fire(rule, f"{fp}", seq, ev, fp, 0, "New issue") if new_issue else None
        if rule.kind == "regression":
            resolved = self._resolved_seq(fp)
            if not resolved or seq <= resolved or (fp, resolved) in self._regressed:
                return None
            self._regressed.add((fp, resolved))
            return self._fire(rule, f"{fp}.r{resolved}", seq, ev, fp, 0, "Regression")
        if rule.kind == "severity":
            return self._windowed(rule, fp, at, seq, ev, fp, threshold=0, what="Severe event")
        key = agent if rule.kind == "agent_frequency" else fp
        what = "Agent flood" if rule.kind == "agent_frequency" else "Issue burst"
        return self._windowed(rule, key, at, seq, ev, fp, threshold=rule.threshold, what=what)

    def _windowed(
        self,
        rule: AlertRule,
        key: str,
        at: float,
        seq: int,
        ev: ErrorEvent,
        fp: str,
        *,
        threshold: int,
        what: str,
    ) -> AlertFired | None:
        w = self._windows.setdefault((rule.name, key), _Window())
        w.times.append(at)
        while w.times and w.times[0] <= at - rule.window_secs:
            w.times.popleft()
        if len(w.times) <= threshold or at < w.quiet_until:
            return None
        w.quiet_until = at + rule.cooldown()
        return self._fire(rule, f"{key}.{seq}", seq, ev, fp, len(w.times), what)

    def _fire(
        self, rule: AlertRule, key: str, seq: int, ev: ErrorEvent, fp: str, count: int, what: str
    ) -> AlertFired:
        if rule.kind in ("agent_frequency", "issue_frequency"):
            where = f"{ev.machine}/{ev.source}" if rule.kind == "agent_frequency" else ev.error_type
            summary = (
                f"{what}: {count} events of {where} in {rule.window_secs:g} s (> {rule.threshold})"
            )
        else:
            summary = f"{what}: [{ev.severity.value}] {ev.source}: {ev.error_type}: {ev.message}"
        return AlertFired(
            alert_id=f"{rule.name}.{key}",
            rule=rule.name,
            kind=rule.kind,
            summary=summary[:300],
            severity=ev.severity,
            fired_at=ev.received_at,
            event_at=ev.received_at,
            fingerprint=fp,
            machine=ev.machine,
            source=ev.source,
            error_type=ev.error_type,
            count=count,
            threshold=rule.threshold,
            window_secs=rule.window_secs if rule.kind.endswith("frequency") else 0.0,
            event_seq=seq,
            event_id=ev.event_id,
        )


def instance_name() -> str:
    """``<host>:<pid>`` of this console."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Firing:
    """Fires what the ``RuleEngine`` finds due, once per fleet (module note).

    ``claim(alert_id) -> bool`` creates the dedupe key (False: another console has it);
    ``publish(alert)`` stores the alert in the stream (raises on failure);
    ``webhooks``: where to POST; ``on_webhook(alert_id, outcome)`` records each outcome.
    ``live_from_seq``: events at or below it (the backlog read at start) are not fired for.
    """

    def __init__(
        self,
        config: AlertsConfig,
        *,
        claim: Callable[[str], Awaitable[bool]],
        publish: Callable[[AlertFired], Awaitable[None]],
        on_webhook: Callable[[str, str], None],
        session: Callable[[], aiohttp.ClientSession],
        live_from_seq: int = 0,
    ) -> None:
        self.config = config
        self._claim = claim
        self._publish = publish
        self._on_webhook = on_webhook
        self._session = session
        self.live_from_seq = live_from_seq
        self.fired = 0
        self.lost_claims = 0
        self._rules = {r.name: r for r in config.rules}

    async def fire(self, alert: AlertFired) -> bool:
        """Claim, publish, then call the webhooks (in the background). False when another
        console claimed it or the event is from the backlog."""
        if alert.event_seq <= self.live_from_seq:
            return False
        if not await self._claim(alert.alert_id):
            self.lost_claims += 1
            return False
        alert = msgspec.structs.replace(alert, fired_at=datetime.now(UTC), fired_by=instance_name())
        await self._publish(alert)
        self.fired += 1
        rule = self._rules.get(alert.rule)
        if rule is not None and rule.webhook:
            for hook in self.config.webhooks:
                asyncio.get_running_loop().create_task(self._post(hook, alert))
        return True

    async def _post(self, hook: WebhookConfig, alert: AlertFired) -> None:
        outcome = await post_webhook(self._session(), hook, encode_alert(alert))
        self._on_webhook(alert.alert_id, outcome)


async def post_webhook(session: aiohttp.ClientSession, hook: WebhookConfig, body: bytes) -> str:
    """POST ``body`` to ``hook.url``; ``"sent <status>"`` or ``"failed: <why>"`` after the last
    attempt (never raises)."""
    why = ""
    for attempt in range(hook.attempts):
        if attempt:
            await asyncio.sleep(hook.backoff_secs * attempt)
        try:
            async with session.post(
                hook.url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=hook.timeout_secs),
            ) as resp:
                if resp.status < 300:
                    return f"sent {resp.status}"
                why = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = str(exc) or type(exc).__name__
    log.warning("webhook %s failed after %d attempts: %s", hook.url, hook.attempts, why)
    return f"failed: {why}"


def rules_view(config: AlertsConfig) -> list[dict[str, Any]]:
    """The rules as JSON-able dicts for the page (cooldown resolved)."""
    return [{**msgspec.to_builtins(r), "cooldown_secs": r.cooldown()} for r in config.rules]
