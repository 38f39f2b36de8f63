"""Scenarios for ``promtool test rules`` on ops/prometheus/busbridge-alerts.yml.

For each alert: input series that must make it fire, when, and with which labels (the rule's
labels plus what its expression keeps: a ``sum by (instance, reason)`` keeps only those), and
optionally an earlier time at which it must still be quiet (its ``for:``). ``QUIET`` lists
conditions that must not fire an alert, and ``HEALTHY`` is a healthy bridge on which no alert
fires at all. Values use promtool's notation, one sample per minute: ``0+60x30`` is 0, 60, ...
(31 samples), ``1 1 0x10`` is 1, 1, then eleven 0s.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["FIRING", "HEALTHY", "QUIET", "promtool_tests"]

#: the scrape target's labels (job and machine label as in ops/prometheus/prometheus.yml)
TARGET = {"instance": "mainpc:9150", "job": "busbridge", "machine": "MainPC"}
_BY_INSTANCE = {"instance": TARGET["instance"]}


class Firing(NamedTuple):
    series: dict[str, str]  #: '<name>' or '<name>{a="b"}' (target labels added) -> values
    eval_time: str
    labels: dict[str, str]  #: the alert's labels besides alertname
    quiet_at: str | None = None  #: still pending (its for:) at this time


def _t(severity: str, **extra: str) -> dict[str, str]:
    return {**TARGET, "severity": severity, **extra}


def _agg(severity: str, **extra: str) -> dict[str, str]:
    return {**_BY_INSTANCE, "severity": severity, **extra}


FIRING: dict[str, Firing] = {
    "BusbridgeNatsDown": Firing(
        {"busbridge_nats_connected": "1 1 0x10"}, "4m", _t("critical"), quiet_at="2m"
    ),
    "BusbridgeNotReady": Firing({"busbridge_ready": "0x10"}, "7m", _t("warning"), quiet_at="3m"),
    "BusbridgeSpoolGrowing": Firing(
        {"busbridge_spool_messages": "20000+1000x40"}, "15m", _t("warning"), quiet_at="5m"
    ),
    "BusbridgeSpoolOld": Firing(
        {"busbridge_spool_oldest_age_seconds": "1000x10"}, "7m", _t("warning"), quiet_at="3m"
    ),
    "BusbridgeSpoolNearFull": Firing(
        {"busbridge_spool_bytes": "2000000000x10"}, "3m", _t("critical")
    ),
    "BusbridgeSpoolEvicting": Firing(
        {'busbridge_spool_evictions_total{reason="max_bytes", severity="debug"}': "0 0 5x10"},
        "3m",
        _agg("critical", reason="max_bytes"),
    ),
    "BusbridgeDroppedEvents": Firing(
        {'busbridge_dropped_total{reason="pending_full"}': "0 0 5x10"},
        "3m",
        _agg("critical", reason="pending_full"),
    ),
    "BusbridgeDeadLettersRising": Firing(
        {'busbridge_dead_letters_total{reason="invalid_json"}': "0+60x40"},
        "15m",
        _agg("warning", reason="invalid_json"),
        quiet_at="5m",
    ),
    "BusbridgePublishFailures": Firing(
        {'busbridge_publish_failures_total{reason="timeout"}': "0+120x30"},
        "10m",
        _agg("warning", reason="timeout"),
        quiet_at="3m",
    ),
    "BusbridgeNoZmqPublishers": Firing(
        {"busbridge_zmq_publishers_connected": "0x40"}, "35m", _t("info"), quiet_at="10m"
    ),
    "BusbridgeFloodActive": Firing(
        {"busbridge_floods_active": "2x30"}, "20m", _t("warning"), quiet_at="10m"
    ),
    "BusbridgeDuplicateRisk": Firing(
        {"busbridge_spool_duplicate_risk_total": "0 0 3x10"}, "3m", _t("info")
    ),
    "BusbridgeStreamLostAcknowledged": Firing(
        {"busbridge_spool_restored_total": "0 0 400x10"}, "3m", _t("warning")
    ),
    "BusbridgeConfigReloadFailed": Firing(
        {'busbridge_config_reloads_total{result="invalid"}': "0 0 1x10"},
        "3m",
        _t("warning", result="invalid"),
    ),
    "BusbridgeParityLow": Firing(
        {"busbridge_parity_ratio": "0.5x30", 'busbridge_phase{phase="dual"}': "1x30"},
        "15m",
        _t("warning"),
        quiet_at="5m",
    ),
    "BusbridgePhaseRequestRefused": Firing(
        {"busbridge_phase_desired_mismatch": "1x30"}, "20m", _t("info"), quiet_at="10m"
    ),
    "BusbridgeLegacyLoopDetected": Firing(
        {"busbridge_loop_dropped_total": "0 0 2x10"}, "3m", _t("warning")
    ),
    "BusbridgeHeartbeatStale": Firing(
        {'busbridge_health_written_total{contract="bridge_heartbeat", to="kv"}': "0+6x3 18x20"},
        "9m",
        _t("critical", contract="bridge_heartbeat", to="kv"),
        quiet_at="2m",
    ),
    "BusbridgeAgentsUnhealthy": Firing(
        {'busbridge_health_agents{status="unhealthy"}': "2x30"},
        "15m",
        _t("warning", status="unhealthy"),
        quiet_at="5m",
    ),
    "BusbridgeZmqCurveRefused": Firing(
        {'busbridge_zmq_connection_events_total{event="handshake_failed_auth"}': "0 0 3x10"},
        "3m",
        _t("warning", event="handshake_failed_auth"),
    ),
}

#: (alert, series, eval time): conditions that must not fire it
QUIET: list[tuple[str, dict[str, str], str]] = [
    # parity is only judged in dual / nats_primary
    (
        "BusbridgeParityLow",
        {"busbridge_parity_ratio": "0.5x30", 'busbridge_phase{phase="zmq_only"}': "1x30"},
        "20m",
    ),
    # nothing was compared yet (-1)
    (
        "BusbridgeParityLow",
        {"busbridge_parity_ratio": "-1x30", 'busbridge_phase{phase="dual"}': "1x30"},
        "20m",
    ),
    # applied reloads are fine
    (
        "BusbridgeConfigReloadFailed",
        {'busbridge_config_reloads_total{result="applied"}': "0+1x30"},
        "20m",
    ),
]

HEALTHY: dict[str, str] = {
    "busbridge_nats_connected": "1x60",
    "busbridge_ready": "1x60",
    "busbridge_spool_messages": "0x60",
    "busbridge_spool_oldest_age_seconds": "0x60",
    "busbridge_spool_bytes": "0x60",
    'busbridge_spool_evictions_total{reason="max_bytes", severity="debug"}': "0x60",
    'busbridge_dropped_total{reason="pending_full"}': "0x60",
    'busbridge_dead_letters_total{reason="invalid_json"}': "0x60",
    'busbridge_publish_failures_total{reason="timeout"}': "0x60",
    "busbridge_zmq_publishers_connected": "3x60",
    "busbridge_floods_active": "0x60",
    "busbridge_spool_duplicate_risk_total": "0x60",
    "busbridge_spool_restored_total": "0x60",
    'busbridge_config_reloads_total{result="applied"}': "0+1x60",
    "busbridge_parity_ratio": "1x60",
    'busbridge_phase{phase="dual"}': "1x60",
    "busbridge_phase_desired_mismatch": "0x60",
    "busbridge_loop_dropped_total": "0x60",
}


def _series(series: dict[str, str]) -> list[dict[str, str]]:
    target = ", ".join(f'{k}="{v}"' for k, v in TARGET.items())
    out = []
    for key, values in series.items():
        name, _, extra = key.partition("{")
        labels = f"{extra.rstrip('}')}, {target}" if extra else target
        out.append({"series": f"{name}{{{labels}}}", "values": values})
    return out


def promtool_tests(alerts: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The ``promtool test rules`` document for ``alerts`` (rules file ``rules.yml``) and the
    alerts that have no firing scenario."""
    tests = []
    for alert in alerts:
        if alert not in FIRING:
            continue
        case = FIRING[alert]
        checks = [
            {
                "eval_time": case.eval_time,
                "alertname": alert,
                "exp_alerts": [{"exp_labels": case.labels}],
            }
        ]
        if case.quiet_at:
            checks.insert(0, {"eval_time": case.quiet_at, "alertname": alert, "exp_alerts": []})
        tests.append(
            {
                "name": f"{alert} fires",
                "interval": "1m",
                "input_series": _series(case.series),
                "alert_rule_test": checks,
            }
        )
    for alert, series, at in QUIET:
        check = {"eval_time": at, "alertname": alert, "exp_alerts": []}
        tests.append(
            {
                "name": f"{alert} quiet",
                "interval": "1m",
                "input_series": _series(series),
                "alert_rule_test": [check],
            }
        )
    quiet = [{"eval_time": "60m", "alertname": alert, "exp_alerts": []} for alert in alerts]
    tests.append(
        {
            "name": "healthy bridge",
            "interval": "1m",
            "input_series": _series(HEALTHY),
            "alert_rule_test": quiet,
        }
    )
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    return doc, [a for a in alerts if a not in FIRING]
