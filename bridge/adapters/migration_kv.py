"""The migration view's KV bucket (``migration.kv_bucket``, default ``busbridge_migration``).

One key per bridge, ``<machine>.<bridge_id>`` (``contracts.migration.migration_key``), holding its
latest ``MigrationReport`` JSON; history 1; keys not written for ``migration.kv_ttl_secs``
expire. ``open_bucket`` creates the bucket when missing; ``read_reports`` returns every
readable report (a value of another shape is skipped and logged). Both raise nats errors when
JetStream does not answer (callers retry later).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType

from bridge.config.model import BridgeConfig, StorageKind
from contracts.migration import MigrationReport, decode_report, encode_report, migration_key

__all__ = ["open_bucket", "read_reports", "run_reports", "write_report"]

log = logging.getLogger(__name__)


async def open_bucket(js: Any, cfg: BridgeConfig) -> Any:
    m = cfg.migration
    try:
        return await js.key_value(m.kv_bucket)
    except nats.js.errors.BucketNotFoundError:
        storage = StorageType.FILE if cfg.stream.storage is StorageKind.FILE else StorageType.MEMORY
        config = KeyValueConfig(
            bucket=m.kv_bucket,
            history=1,
            ttl=m.kv_ttl_secs,
            storage=storage,
            replicas=cfg.stream.replicas,
        )
        return await js.create_key_value(config=config)


async def write_report(kv: Any, report: MigrationReport) -> int:
    """Store ``report`` under its bridge's key; return the revision."""
    return await kv.put(migration_key(report.machine, report.bridge_id), encode_report(report))


async def read_reports(kv: Any) -> list[MigrationReport]:
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return []
    reports = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue
        try:
            reports.append(decode_report(entry.value or b""))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("migration view: skipping key %s: %s", key, exc)
    return reports


async def run_reports(
    js: Callable[[], Any],
    cfg: BridgeConfig,
    report: Callable[[], MigrationReport],
    on_reports: Callable[[list[MigrationReport]], None],
) -> None:
    """Every ``migration.report_interval_secs``: write ``report()`` (this bridge's
    ``MigrationReport``) and hand every bridge's reports to ``on_reports(list)``. Runs until
    cancelled; NATS errors are logged and retried at the next interval."""
    kv = None
    while True:
        try:
            kv = kv or await open_bucket(js(), cfg)
            await write_report(kv, report())
            on_reports(await read_reports(kv))
        except (nats.errors.Error, OSError) as exc:
            kv = None
            log.warning("migration view: %r; retrying", exc)
        await anyio.sleep(cfg.migration.report_interval_secs)
