"""``busbridge migration``: who still publishes the old way, fleet-wide (DESIGN §8).

Reads every bridge's ``MigrationReport`` from the KV bucket ``migration.kv_bucket`` (written by
each bridge every ``migration.report_interval_secs``, ``bridge.migration``) and prints one row
per machine, source and transport: legacy transports first (``zmq:<dialect>``,
``nats:library_a``, ``nats:library_b``), then native ones (``native:<client api>``: migrated on
the wire; a ``native:<legacy api>`` row still calls a legacy API through a ``busclient`` shim).
``--json`` prints the rows and a summary as JSON. ``--legacy-only`` keeps the legacy rows.

Exit status: 0 when shown; 1 with a message on stderr when NATS is unreachable or the bucket
does not exist (no bridge has written a report yet).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import nats.errors
import nats.js.errors

from bridge.adapters.migration_kv import read_reports
from bridge.adapters.nats_connect import NatsUnreachable, connect_tool
from bridge.config.model import BridgeConfig
from bridge.migration import fleet_rows, legacy_nats_idle_secs

__all__ = ["run_migration"]


async def run_migration(
    cfg: BridgeConfig, args: argparse.Namespace, out: TextIO = sys.stdout
) -> int:
    try:
        nc = await connect_tool(cfg, name="busbridge-migration", keep_reconnecting=False)
    except NatsUnreachable as exc:
        print(f"busbridge migration: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            kv = await nc.jetstream().key_value(cfg.migration.kv_bucket)
        except nats.js.errors.BucketNotFoundError:
            print(
                f"busbridge migration: KV bucket {cfg.migration.kv_bucket} does not exist"
                " (no bridge has written a report yet)",
                file=sys.stderr,
            )
            return 1
        reports = await read_reports(kv)
    except nats.errors.Error as exc:
        print(f"busbridge migration: NATS error: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    rows = fleet_rows(reports)
    if args.legacy_only:
        rows = [r for r in rows if r["legacy"]]
    now = datetime.now(UTC)
    summary = _summary(rows, reports, now)
    if args.json:
        json.dump({"summary": summary, "sources": rows}, out, default=_iso, indent=2)
        out.write("\n")
    else:
        _table(out, rows, summary, now)
    return 0


def _summary(rows: list[dict[str, Any]], reports: list[Any], now: datetime) -> dict[str, Any]:
    idle = legacy_nats_idle_secs(reports, now)
    legacy = [r for r in rows if r["legacy"]]
    return {
        "bridges": sorted(f"{r.machine}/{r.bridge_id}" for r in reports),
        "legacy_sources": len({(r["machine"], r["source"]) for r in legacy}),
        "native_sources": len({(r["machine"], r["source"]) for r in rows if not r["legacy"]}),
        "legacy_nats_idle_secs": None if idle == float("inf") else round(idle, 1),
        "by_transport": _by_transport(rows),
    }


def _by_transport(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["transport"]] = counts.get(r["transport"], 0) + 1
    return dict(sorted(counts.items()))


def _table(out: TextIO, rows: list[dict[str, Any]], summary: dict[str, Any], now: datetime) -> None:
    header = ("MACHINE", "SOURCE", "TRANSPORT", "COUNT", "FIRST SEEN", "LAST SEEN")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["machine"],
                r["source"],
                r["transport"],
                str(r["count"]),
                _ago(r["first_seen"], now),
                _ago(r["last_seen"], now),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        out.write("\n")
    idle = summary["legacy_nats_idle_secs"]
    out.write(
        f"\n{summary['legacy_sources']} source(s) still on a legacy transport,"
        f" {summary['native_sources']} native; bridges: {', '.join(summary['bridges']) or 'none'};"
        f" legacy NATS last seen {'never' if idle is None else f'{idle:.0f} s ago'}\n"
    )


def _ago(at: datetime, now: datetime) -> str:
    secs = max(0.0, (now - at).total_seconds())
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)
