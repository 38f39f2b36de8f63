"""Load and validate a configuration file: YAML -> strict ``BridgeConfig``.

``load_config(path)`` and ``parse_config(text, source)`` return a resolved
``BridgeConfig`` (machine and bridge id filled in) or raise ``ConfigError``
listing *every* problem found, each as ``<path>: <message>`` (e.g.
``zmq.rcvhwm: Expected int >= 0, got -5``). Checking goes field by field so
that one bad value does not hide the next, then the cross-field rules run.
"""

from __future__ import annotations

import os
import re
import socket
import typing
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from bridge.config.health import health_problems
from bridge.config.model import BridgeConfig, ZmqMode
from bridge.config.plaintext import plain_secret_problems, redact_url
from bridge.config.security_checks import security_problems
from bridge.errors import ConfigError
from contracts.messages import Severity
from contracts.subjects import LEGACY_PREFIXES, sanitise_token

__all__ = ["cross_checks", "load_config", "parse_config", "resolve_defaults"]

_ENDPOINT_SCHEMES = ("tcp://", "ipc://", "inproc://")
_NATS_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


def load_config(path: str | os.PathLike[str] | None) -> BridgeConfig:
    """Read ``path`` (``None``: all defaults). Raises ``ConfigError``."""
    if path is None:
        return parse_config("{}", "<defaults>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"<file>: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"<file>: not UTF-8 text: {exc}"]) from exc
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "<string>") -> BridgeConfig:
    """Parse YAML ``text``; ``source`` names it in errors. Raises ``ConfigError``."""
    try:
        loader = _UniqueKeyLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"<yaml>: {exc}"]) from exc
    data = {} if data is None else data
    problems = list(loader.duplicates)  # YAML would silently keep only the last of them
    problems += plain_secret_problems(data)  # named once, not also as an unknown key
    secret_paths = {p.split(": ", 1)[0] for p in problems}
    problems += [
        p
        for p in _collect_problems(BridgeConfig, data, "")
        if p.split(": ", 1)[0] not in secret_paths
    ]
    if problems:
        raise ConfigError(source, problems)
    cfg = resolve_defaults(msgspec.convert(data, BridgeConfig))
    problems = cross_checks(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that records every repeated mapping key (``duplicates``) instead of
    letting the last one win silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in first_line:
                self.duplicates.append(
                    f"<yaml>: line {line}: duplicate key {key!r} (first at line {first_line[key]})"
                )
            else:
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def resolve_defaults(cfg: BridgeConfig) -> BridgeConfig:
    """Fill ``machine`` (env ``BUSBRIDGE_MACHINE`` or host name) and ``bridge_id``."""
    machine = cfg.machine or os.environ.get("BUSBRIDGE_MACHINE") or socket.gethostname()
    machine = sanitise_token(machine)
    return msgspec.structs.replace(cfg, machine=machine, bridge_id=cfg.bridge_id or machine)


def cross_checks(cfg: BridgeConfig) -> list[str]:
    """Rules spanning several fields; returns every violated rule as ``path: message``."""
    problems: list[str] = []
    problems += _check_zmq(cfg)
    problems += _check_nats(cfg)
    problems += security_problems(cfg)
    if cfg.stream.subject_prefix.split(".")[0] in LEGACY_PREFIXES:
        problems.append(
            "stream.subject_prefix: must not start with 'errors' (legacy errors.> streams)"
        )
    if cfg.identity.occurrence_window_secs < cfg.stream.duplicate_window_secs:
        problems.append(
            "identity.occurrence_window_secs: must be >= stream.duplicate_window_secs "
            f"({cfg.identity.occurrence_window_secs} < {cfg.stream.duplicate_window_secs}); "
            "else a legitimate repeat after the window reuses an id JetStream still remembers"
        )
    if cfg.publish.retry_initial_secs > cfg.publish.retry_max_secs:
        problems.append("publish.retry_initial_secs: must be <= publish.retry_max_secs")
    if cfg.publish.batch_idle_secs >= cfg.publish.ack_timeout_secs:
        problems.append(
            "publish.batch_idle_secs: must be < publish.ack_timeout_secs "
            f"({cfg.publish.batch_idle_secs} >= {cfg.publish.ack_timeout_secs}); the last "
            "messages of an idle batch are acknowledged only when it ends"
        )
    if cfg.spool.retain_acked_secs > cfg.stream.duplicate_window_secs:
        problems.append(
            "spool.retain_acked_secs: must be <= stream.duplicate_window_secs "
            f"({cfg.spool.retain_acked_secs} > {cfg.stream.duplicate_window_secs}); a message "
            "restored after a stream loss may be stored twice outside the window"
        )
    problems += _check_flood(cfg)
    problems += health_problems(cfg.health)
    try:
        ZoneInfo(cfg.legacy.local_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"legacy.local_timezone: unknown time zone {cfg.legacy.local_timezone!r}")
    return problems


def _check_flood(cfg: BridgeConfig) -> list[str]:
    problems = []
    names = [r.name for r in cfg.flood.rules]
    for i, rule in enumerate(cfg.flood.rules):
        where = f"flood.rules[{i}]"
        if rule.name in names[:i]:
            problems.append(f"{where}.name: duplicate rule name {rule.name!r}")
        if rule.match is not None:
            try:
                re.compile(rule.match)
            except re.error as exc:
                problems.append(f"{where}.match: invalid regex {rule.match!r}: {exc}")
        if rule.escalate_to is not None and rule.escalate_to not in {s.value for s in Severity}:
            problems.append(
                f"{where}.escalate_to: {rule.escalate_to!r} is not one of debug|info|warning|error|critical"
            )
    return problems


def _check_zmq(cfg: BridgeConfig) -> list[str]:
    problems = []
    if cfg.zmq.mode is ZmqMode.CONNECT and not cfg.zmq.connect_endpoints:
        problems.append("zmq.connect_endpoints: required when zmq.mode is 'connect'")
    endpoints = [("zmq.bind_endpoint", cfg.zmq.bind_endpoint)]
    endpoints += [
        (f"zmq.connect_endpoints[{i}]", e) for i, e in enumerate(cfg.zmq.connect_endpoints)
    ]
    for where, endpoint in endpoints:
        if not endpoint.startswith(_ENDPOINT_SCHEMES):
            problems.append(f"{where}: {endpoint!r} is not a tcp://, ipc:// or inproc:// endpoint")
    return problems


def _check_nats(cfg: BridgeConfig) -> list[str]:
    n = cfg.nats
    problems = [
        f"nats.servers[{i}]: {redact_url(url)!r} is not a nats://, tls://, ws:// or wss:// URL"
        for i, url in enumerate(n.servers)
        if not url.startswith(_NATS_SCHEMES)
    ]
    return problems  # secret sources and TLS: bridge.config.security_checks


def _collect_problems(struct_type: type, value: Any, path: str) -> list[str]:
    """Check ``value`` against ``struct_type`` field by field; return every problem."""
    if not isinstance(value, dict):
        try:
            msgspec.convert(value, struct_type)
        except msgspec.ValidationError as exc:
            return [f"{path or '<root>'}: {exc}"]
        return []
    hints = typing.get_type_hints(struct_type, include_extras=True)
    problems = [f"{_join(path, k)}: unknown key" for k in value if k not in hints]
    for key, item in value.items():
        if key in hints:
            problems += _check_field(hints[key], item, _join(path, str(key)))
    return problems


def _check_field(annotation: Any, value: Any, path: str) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _collect_problems(annotation, value, path)
    try:
        msgspec.convert(value, annotation)
    except msgspec.ValidationError as exc:
        return [f"{path}: {exc}"]
    return []


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
