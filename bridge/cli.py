"""``busbridge`` command line (argparse).

Commands: ``run`` (the bridge; embedded nats-server unless a URL is given),
``check-config FILE`` (validate; exit 2 listing every problem), ``tail``
(print stored events), ``health`` (fleet health from the KV bucket), ``replay`` (send captured legacy frames over ZMQ),
``loadtest`` (load and chaos scenarios, the CI profile: ``loadtest.cli``),
``keys generate`` (a ZMQ CURVE key pair, ``bridge.keys``), ``phase show|set`` (the cutover
phase, ``consumers.phase_cli``), ``status`` (one screen from the admin endpoint,
``consumers.status``; exit 3 when the bridge is not ready).
Exit status: 0 ok, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

import anyio
import msgspec

from bridge.config.load import load_config
from bridge.config.model import BridgeConfig
from bridge.errors import BridgeError, ConfigError
from bridge.redaction import install_log_redaction, scrub

__all__ = ["main"]

log = logging.getLogger("busbridge")

ENV_CONFIG = "BUSBRIDGE_CONFIG"
ENV_NATS_URL = "BUSBRIDGE_NATS_URL"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(next((a for a in argv if not a.startswith("-")), None)).parse_args(argv)
    try:
        return int(_unwrap(args.func, args) or 0)
    except ConfigError as exc:
        print(scrub(str(exc)), file=sys.stderr)
        return exc.exit_status
    except BridgeError as exc:
        print(f"busbridge: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


def _unwrap(func: object, args: argparse.Namespace) -> int:
    """Run a command; an error raised inside a task group arrives as a group of one: unwrap it."""
    try:
        return func(args)  # type: ignore[operator]
    except BaseExceptionGroup as group:
        errors = group.exceptions
        while len(errors) == 1 and isinstance(errors[0], BaseExceptionGroup):
            errors = errors[0].exceptions
        if len(errors) == 1 and isinstance(errors[0], BridgeError | KeyboardInterrupt):
            raise errors[0] from group
        raise


def _add_console(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="live web console of the fleet (issues, feed, alerts)")
    _config_args(p)
    p.add_argument("--console-config", metavar="FILE", help="the console's YAML settings")
    p.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 9160; 0: any free port)")
    p.add_argument("--webhook", action="append", default=[], metavar="URL", help="POST alerts")
    p.set_defaults(func=_cmd_console)


def _cmd_console(args: argparse.Namespace) -> int:
    from consumers.console import run_console

    cfg = effective_config(args)
    _setup_logging("INFO")
    return run_console(cfg, args)


#: subcommands whose options come from ``consumers`` or ``loadtest``: their modules are
#: imported only when that subcommand runs (or its ``--help`` is asked for)
_LAZY = {
    "tail": "print stored events from the stream",
    "health": "fleet health (every bridge and legacy agent) from the health KV bucket",
    "replay": "send recorded legacy frames to the bridge over ZMQ PUB",
    "loadtest": "run a load/chaos scenario or the CI profile; progress, table, JSON, plot",
    "phase": "show or set the cutover phase (this machine, or the fleet via NATS KV)",
}


def _parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The command line; only ``chosen``'s options (a subcommand name) are built in full for
    the subcommands in ``_LAZY``, the others are listed with their help."""
    parser = argparse.ArgumentParser(prog="busbridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lazy = {
        "tail": _add_tail,
        "health": _add_health,
        "replay": _add_replay,
        "loadtest": _add_loadtest,
        "phase": _add_phase,
    }
    _add_run(sub)
    _add_console(sub)
    _add_check(sub)
    for name, add in lazy.items():
        if name == chosen:
            add(sub)
        else:
            sub.add_parser(name, help=_LAZY[name])
    _add_stream_json(sub)
    _add_kv_json(sub)
    _add_keys(sub)
    _add_status(sub)
    _add_migration(sub)
    return parser


def _add_migration(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migration", help="who still publishes the old way: sources by transport, fleet-wide"
    )
    _config_args(p)
    p.add_argument("--json", action="store_true", help="print rows and summary as JSON")
    p.add_argument(
        "--legacy-only", action="store_true", help="only sources still on ZMQ or errors.>"
    )
    p.set_defaults(func=_cmd_migration)


def _cmd_migration(args: argparse.Namespace) -> int:
    from consumers.migration_view import run_migration

    cfg = effective_config(args)
    _setup_logging("WARNING")
    return anyio.run(run_migration, cfg, args)


def _add_phase(sub: argparse._SubParsersAction) -> None:
    from consumers.phase_cli import add_arguments

    p = sub.add_parser("phase", help=_LAZY["phase"])
    add_arguments(p, _config_args)
    p.set_defaults(func=_cmd_phase)


def _cmd_phase(args: argparse.Namespace) -> int:
    from consumers.phase_cli import run_phase

    cfg = effective_config(args)
    _setup_logging("WARNING")
    return anyio.run(run_phase, cfg, args)


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status", help="one screen: phase, rates, spool, NATS, publishers, floods (admin endpoint)"
    )
    p.add_argument(
        "-c",
        "--config",
        default=os.environ.get(ENV_CONFIG),
        help=f"YAML config file: its admin.host/port (env {ENV_CONFIG})",
    )
    p.add_argument(
        "--admin",
        metavar="URL",
        help="admin endpoint URL instead of the config's, e.g. http://192.168.100.17:9150",
    )
    p.add_argument(
        "--interval-secs",
        type=float,
        default=1.0,
        help="rates: seconds between two reads of /metrics (0: totals only)",
    )
    p.add_argument("--timeout-secs", type=float, default=5.0, help="HTTP timeout per request")
    p.set_defaults(func=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 ready, 3 not ready, 1 unreachable (``consumers.status``); 2 for a config without an admin port."""
    from consumers.status import admin_url, run_status

    url, machine = args.admin, None
    if not url:
        cfg = load_config(args.config)
        if not cfg.admin.enabled or cfg.admin.port == 0:
            raise ConfigError(
                args.config or "<defaults>",
                ["admin: enabled with a fixed port is needed (or pass --admin URL)"],
            )
        url, machine = admin_url(cfg.admin.host, cfg.admin.port), cfg.machine
    return run_status(
        url.rstrip("/"),
        interval_secs=args.interval_secs,
        timeout_secs=args.timeout_secs,
        machine=machine,
    )


def _add_keys(sub: argparse._SubParsersAction) -> None:
    from bridge.keys import add_arguments

    add_arguments(
        sub.add_parser("keys", help="ZMQ CURVE key pairs for the ingest socket (zmq.curve)")
    )


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=os.environ.get(ENV_CONFIG),
        help=f"YAML config file (env {ENV_CONFIG})",
    )
    p.add_argument(
        "--nats-url",
        default=os.environ.get(ENV_NATS_URL),
        help=f"NATS server URL(s), comma separated; overrides nats.servers (env {ENV_NATS_URL})",
    )


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the bridge (embedded nats-server unless a NATS URL is configured)"
    )
    _config_args(p)
    p.add_argument("--zmq-endpoint", help="override zmq.bind_endpoint, e.g. tcp://*:7150")
    p.add_argument("--machine", help="override machine")
    p.add_argument("--data-dir", help="override data_dir")
    p.add_argument("--admin-port", type=int, help="override admin.port (0: any free port)")
    p.set_defaults(func=_cmd_run)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a config file; list every problem")
    p.add_argument("file")
    p.add_argument(
        "--show",
        action="store_true",
        help="print the effective configuration as YAML-compatible JSON",
    )
    p.set_defaults(func=_cmd_check)


def _add_tail(sub: argparse._SubParsersAction) -> None:
    from consumers.tail import add_arguments

    p = sub.add_parser("tail", help=_LAZY["tail"])
    _config_args(p)
    add_arguments(p)
    p.set_defaults(func=_cmd_tail)


def _add_stream_json(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stream-json", help="print the stream definition as JSON (for `nats stream add --config`)"
    )
    p.add_argument("-c", "--config", default=os.environ.get(ENV_CONFIG), help="YAML config file")
    p.set_defaults(func=_cmd_stream_json)


def _cmd_stream_json(args: argparse.Namespace) -> int:
    from bridge.adapters.jetstream import stream_definition

    sys.stdout.write(stream_definition(load_config(args.config).stream))
    return 0


def _add_kv_json(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kv-json",
        help="print a KV bucket's stream definition as JSON (for `nats stream add --config`)",
    )
    p.add_argument(
        "bucket", choices=["phase", "health"], help="phase: cutover requests; health: fleet health"
    )
    p.add_argument("-c", "--config", default=os.environ.get(ENV_CONFIG), help="YAML config file")
    p.set_defaults(func=_cmd_kv_json)


def _cmd_kv_json(args: argparse.Namespace) -> int:
    from bridge.adapters.health_kv import bucket_config_for
    from bridge.adapters.kv_json import kv_stream_definition
    from bridge.fleet_phase import bucket_config

    cfg = load_config(args.config)
    if args.bucket == "phase":
        kv = bucket_config(cfg.phase.kv_bucket, cfg.stream.replicas)
    else:
        kv = bucket_config_for(cfg.health)
    sys.stdout.write(kv_stream_definition(kv))
    return 0


def _add_replay(sub: argparse._SubParsersAction) -> None:
    from loadtest.replay import add_arguments

    p = sub.add_parser("replay", help=_LAZY["replay"])
    add_arguments(p)
    p.set_defaults(func=_cmd_replay)


def _add_loadtest(sub: argparse._SubParsersAction) -> None:
    from loadtest.cli import add_arguments

    p = sub.add_parser("loadtest", help=_LAZY["loadtest"])
    add_arguments(p)
    p.set_defaults(func=_cmd_loadtest)


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from loadtest.cli import run_loadtest

    _setup_logging("WARNING")
    return run_loadtest(args)


def effective_config(args: argparse.Namespace) -> BridgeConfig:
    """The config file with command-line overrides applied. Raises ``ConfigError``."""
    return with_overrides(load_config(args.config), args)


def with_overrides(cfg: BridgeConfig, args: argparse.Namespace) -> BridgeConfig:
    """``cfg`` with the command-line overrides in ``args``, validated again. Raises ``ConfigError``."""
    if getattr(args, "nats_url", None):
        servers = [u.strip() for u in args.nats_url.split(",") if u.strip()]
        cfg = msgspec.structs.replace(cfg, nats=msgspec.structs.replace(cfg.nats, servers=servers))
    overrides = {
        "machine": getattr(args, "machine", None),
        "data_dir": getattr(args, "data_dir", None),
    }
    cfg = msgspec.structs.replace(cfg, **{k: v for k, v in overrides.items() if v})
    if getattr(args, "zmq_endpoint", None):
        cfg = msgspec.structs.replace(
            cfg, zmq=msgspec.structs.replace(cfg.zmq, bind_endpoint=args.zmq_endpoint)
        )
    if getattr(args, "admin_port", None) is not None:
        cfg = msgspec.structs.replace(
            cfg, admin=msgspec.structs.replace(cfg.admin, port=args.admin_port)
        )
    return _revalidate(cfg, args.config or "<defaults>")


def _revalidate(cfg: BridgeConfig, source: str) -> BridgeConfig:
    from bridge.config.load import parse_config

    return parse_config(msgspec.json.encode(cfg).decode(), f"{source} + command line")


#: CPython hands the GIL to a waiting thread after this long (default 5 ms). The spool's SQLite
#: thread may wait that long for each result while the event loop is busy: at 1 ms a 20 s NATS
#: outage under 8k msg/s drained in 19.6-20.3 s (3 runs) instead of 23.5-27.7 s (2 runs); at
#: 0.5 ms steady 5k msg/s D1 had p50 latency 11-20 ms instead of 25 ms (2 runs each, spool
#: inserts still on the worker thread then).
GIL_SWITCH_INTERVAL_SECS = 0.0005

#: ``gc.set_threshold`` for ``busbridge run``: a young-generation collection after 20,000 net
#: allocations of tracked objects instead of 700, and 10 young collections per older one. Almost
#: everything the data path allocates dies by reference counting; CPython's defaults ran a
#: collection every ~10 messages and full collections that walked the whole heap (the id
#: windows, the spool's staging) for 0.3-1.2 s while the loop stood still (loadtest/README,
#: "Soak"). Measured alternating (loadtest/README, 2026-12-04): all seven dialects at 5k msg/s
#: p99 1-1.5 s in three of four runs before, 0.2-0.33 s in all four after.
GC_THRESHOLDS = (20_000, 10, 10)


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = effective_config(args)
    _setup_logging(cfg.log_level)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECS)
    gc.set_threshold(*GC_THRESHOLDS)
    from bridge.app import Bridge
    from bridge.config.reload import ConfigReloader

    bridge = Bridge(cfg)
    reloader = None
    if args.config:
        count = lambda result: bridge.metrics.config_reloads.labels(result).inc()  # noqa: E731
        reloader = ConfigReloader(
            args.config, cfg, bridge.apply_config, count, lambda c: with_overrides(c, args)
        )

    async def trim_heap(interval_secs: float) -> None:
        """Give the pages glibc holds free inside its heaps back to the OS every interval: after
        a backlog (libzmq's receive queue, spool staging) RSS otherwise stays at its peak."""
        import ctypes

        malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
        while malloc_trim is not None:
            await anyio.sleep(interval_secs)
            await anyio.to_thread.run_sync(malloc_trim, 0)  # ms per call, off the event loop

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_handle_signals, bridge, reloader)
            if reloader is not None:
                tg.start_soon(reloader.watch, cfg.config_watch_secs)
            if cfg.malloc_trim_interval_secs:
                tg.start_soon(trim_heap, cfg.malloc_trim_interval_secs)
            await bridge.serve()
            tg.cancel_scope.cancel()

    anyio.run(serve)
    return 0


async def _handle_signals(bridge: object, reloader: object) -> None:
    """SIGTERM/SIGINT: graceful stop. SIGHUP: reload the config file."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if reloader is not None:
                    log.info("SIGHUP: reloading %s", reloader.path)  # type: ignore[attr-defined]
                    reloader.reload()  # type: ignore[attr-defined]
                continue
            log.info("received %s: stopping", signal.Signals(signum).name)
            bridge.request_stop()  # type: ignore[attr-defined]


def _cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    if args.show:  # secret values and URL credentials redacted; file paths and variable names shown
        from bridge.config.plaintext import redacted

        print(msgspec.json.format(msgspec.json.encode(redacted(cfg)), indent=2).decode())
    else:
        print(
            f"{args.file}: ok (machine {cfg.machine}, stream {cfg.stream.name}, zmq {cfg.zmq.mode.value})"
        )
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    from consumers.tail import run_tail

    cfg = effective_config(args)
    _setup_logging("WARNING")
    return anyio.run(run_tail, cfg, args)


def _add_health(sub: argparse._SubParsersAction) -> None:
    from consumers.health_view import add_arguments

    p = sub.add_parser("health", help=_LAZY["health"])
    _config_args(p)
    add_arguments(p)
    p.set_defaults(func=_cmd_health)


def _cmd_health(args: argparse.Namespace) -> int:
    from consumers.health_view import run_health

    cfg = effective_config(args)
    _setup_logging("WARNING")
    return anyio.run(run_health, cfg, args)


def _cmd_replay(args: argparse.Namespace) -> int:
    from loadtest.replay import run_replay

    _setup_logging("INFO")
    return run_replay(args)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    install_log_redaction()  # resolved secrets and URL credentials never reach a log line


if __name__ == "__main__":
    sys.exit(main())
