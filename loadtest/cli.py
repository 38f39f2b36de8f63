"""``busbridge loadtest``: run a named scenario (or the CI profile) with a progress line and a report.

Usage::

    busbridge loadtest --list
    busbridge loadtest SCENARIO [--rate R] [--duration S] [--publishers N] [--dialects D1=0.5,D3=0.5]
        [--duplicate-ratio X] [--malformed-ratio X] [--burst EVERY:LENGTH:FACTOR] [--flood-share X]
        [--pad-bytes B] [--seed N] [--param KEY=VALUE ...] [--runs N]
        [--json FILE] [--plot FILE.png|FILE.html] [--workdir DIR]
    busbridge loadtest ci [--only NAME,NAME] [--json FILE] [--plot FILE] [--workdir DIR]

Workload options override the scenario's default workload (``loadtest.scenarios.DEFAULTS``);
``--param`` values are YAML scalars (``--param outage_secs=5``) and must name a parameter the
scenario has. ``--workdir`` keeps the servers' stores, the bridge's data and logs there;
without it a temporary directory is used and removed.

Output: progress on stderr (one refreshed line on a terminal, one line per second otherwise:
stage, elapsed seconds, sent, received, receive rate, spool backlog), then the report table
(``loadtest.report``) on stdout. Exit status: 0 every check passed, 1 a check failed,
2 bad usage (unknown scenario or parameter, invalid workload).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import msgspec
import yaml

__all__ = [
    "ProgressDisplay",
    "UsageError",
    "add_arguments",
    "build_workload",
    "parse_params",
    "run_loadtest",
]


class UsageError(ValueError):
    """A command line that cannot run: the message says why (exit status 2)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``loadtest`` options (nothing heavy is imported here)."""
    p.add_argument(
        "scenario", nargs="?", help="scenario name (see --list), or `ci` for the CI profile"
    )
    p.add_argument(
        "--list", action="store_true", help="list the scenarios with their defaults and exit"
    )
    w = p.add_argument_group("workload (overrides the scenario's default)")
    w.add_argument(
        "--rate", type=float, metavar="R", help="message slots per second, all publishers together"
    )
    w.add_argument("--duration", type=float, metavar="S", help="seconds of traffic")
    w.add_argument(
        "--publishers", type=int, metavar="N", help="ZMQ publisher sockets (legacy agents)"
    )
    w.add_argument("--dialects", metavar="MIX", help="dialect weights, e.g. D1=0.5,D3=0.5 (D1..D7)")
    w.add_argument(
        "--duplicate-ratio",
        type=float,
        metavar="X",
        help="fraction of D1/D2 events sent twice (same id)",
    )
    w.add_argument(
        "--malformed-ratio",
        type=float,
        metavar="X",
        help="fraction of malformed messages (dead-lettered)",
    )
    w.add_argument(
        "--burst", metavar="EVERY:LENGTH:FACTOR", help="every EVERY s, LENGTH s at rate x FACTOR"
    )
    w.add_argument(
        "--flood-share",
        type=float,
        metavar="X",
        help="fraction of messages that are one repeated error",
    )
    w.add_argument(
        "--pad-bytes", type=int, metavar="B", help="filler bytes per message (~300 B total at 120)"
    )
    w.add_argument("--seed", type=int, help="seed of the message mix")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario parameter (repeatable)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        metavar="N",
        help="repetitions (scenarios that report medians)",
    )
    p.add_argument("--json", metavar="FILE", help="write every ScenarioResult as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE",
        help="latency distribution and throughput over time (.png or .html)",
    )
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep stores, data and logs in DIR (default: a temp dir, removed)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    c = p.add_argument_group("CI profile (`busbridge loadtest ci`)")
    c.add_argument(
        "--only", metavar="NAMES", help="run only these profile entries (comma separated)"
    )
    c.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="KIND=N",
        help="tests only: prove the profile can fail. loss=N deletes N stored events from the stream, "
        "duplicate=N stores N events again under fresh Nats-Msg-Ids, before the final count",
    )


def run_loadtest(args: argparse.Namespace) -> int:
    """The command: 0 all checks passed, 1 some failed, 2 bad usage."""
    try:
        return _run(args)
    except UsageError as exc:
        print(f"busbridge loadtest: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from loadtest.scenarios import DEFAULTS

    if args.list:
        sys.stdout.write(_listing(DEFAULTS))
        return 0
    if not args.scenario:
        raise UsageError("name a scenario (--list shows them) or `ci`")
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".html"):
        raise UsageError(f"--plot FILE must end in .png or .html: {args.plot}")
    if args.runs < 1:
        raise UsageError(f"--runs must be >= 1, got {args.runs}")
    if args.scenario == "ci":
        return _run_ci(args)
    if args.only or args.inject:
        raise UsageError("--only and --inject belong to the CI profile (`busbridge loadtest ci`)")
    if args.scenario not in DEFAULTS:
        raise UsageError(
            f"unknown scenario {args.scenario!r}; known: {', '.join(sorted(DEFAULTS))}, ci"
        )
    default_workload, default_params, _ = DEFAULTS[args.scenario]
    workload = build_workload(default_workload, args)
    params = parse_params(args.param, default_params)
    return _execute(
        args,
        lambda workdir, progress: _one(
            args.scenario, workload, params, args.runs, workdir, progress
        ),
    )


def _run_ci(args: argparse.Namespace) -> int:
    from loadtest import ci_profile

    overridden = [k for k in _WORKLOAD_OPTIONS if getattr(args, k) is not None] + (
        ["param"] if args.param else []
    )
    if overridden:
        raise UsageError(
            f"the CI profile has fixed workloads; drop --{', --'.join(o.replace('_', '-') for o in overridden)}"
        )
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        injection = ci_profile.parse_injection(args.inject)
        entries = ci_profile.select(only)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return _execute(
        args,
        lambda workdir, progress: ci_profile.run_profile(
            entries, workdir, progress, injection=injection
        ),
    )


async def _one(
    name: str, workload: Any, params: dict[str, Any], runs: int, workdir: Path, progress: Callable
) -> list:
    from loadtest.ci_profile import run_guarded
    from loadtest.scenarios import ScenarioOptions

    options = ScenarioOptions(
        workload=workload, workdir=workdir / name, runs=runs, keep_workdir=True, params=params
    )
    return [await run_guarded(name, options, progress(name))]


async def _stop_on_sigterm(job: Callable, workdir: Path, progress: Callable) -> list:
    """``await job(workdir, progress)``; SIGTERM (``timeout``, systemd, ``kill``) cancels it like
    Ctrl-C does, so its teardown stops every process it started, then exits with status 143."""
    import anyio

    results: list | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    print("busbridge loadtest: SIGTERM, stopping", file=sys.stderr)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        results = await job(workdir, progress)
        tg.cancel_scope.cancel()
    if results is None:
        raise SystemExit(128 + signal.SIGTERM)
    return results


def _execute(args: argparse.Namespace, job: Callable) -> int:
    """Run ``job(workdir, progress_factory)`` (a coroutine giving the results), then report."""
    import anyio

    from loadtest.report import render, write_json

    workdir = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="busbridge-loadtest-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    displays: list[ProgressDisplay] = []

    def progress(label: str) -> Callable[[str, dict[str, float]], None]:
        for d in displays:
            d.close()
        displays.append(ProgressDisplay(label, enabled=not args.no_progress))
        return displays[-1]

    try:
        results = anyio.run(_stop_on_sigterm, job, workdir, progress)
    finally:
        for d in displays:
            d.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(render(results))
    if args.json:
        write_json(results, args.json)
    if args.plot:
        from loadtest.plot import write_plot

        write_plot(results, args.plot)
    return 0 if results and all(r.passed for r in results) else 1


# -- workload and parameters -------------------------------------------------------------------

_WORKLOAD_OPTIONS = {
    "rate": "rate_per_sec",
    "duration": "duration_secs",
    "publishers": "publishers",
    "duplicate_ratio": "duplicate_ratio",
    "malformed_ratio": "malformed_ratio",
    "pad_bytes": "pad_bytes",
    "seed": "seed",
    "dialects": "dialects",
    "burst": "burst",
    "flood_share": "flood",
}


def build_workload(default: Any, args: argparse.Namespace) -> Any:
    """``default`` (a ``Workload``) with the command-line overrides, validated again.

    Raises ``UsageError`` naming the bad option or field.
    """
    from loadtest.workload import Workload

    fields = msgspec.to_builtins(default)
    for option, field in _WORKLOAD_OPTIONS.items():
        value = getattr(args, option, None)
        if value is not None:
            fields[field] = _PARSERS.get(option, lambda v, _: v)(value, fields)
    try:
        return msgspec.convert(fields, Workload)
    except (msgspec.ValidationError, ValueError) as exc:
        raise UsageError(f"invalid workload: {exc}") from exc


def _dialects(text: str, _: dict[str, Any]) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        try:
            mix[name.strip().upper()] = float(weight) if sep else 1.0
        except ValueError:
            raise UsageError(
                f"--dialects: bad weight in {part!r} (want e.g. D1=0.5,D3=0.5)"
            ) from None
    if not mix:
        raise UsageError("--dialects: empty mix")
    return mix


def _burst(text: str, _: dict[str, Any]) -> dict[str, float] | None:
    if text.lower() in ("none", "off", "0"):
        return None
    try:
        every, length, factor = (float(x) for x in text.split(":"))
    except ValueError:
        raise UsageError(
            f"--burst wants EVERY:LENGTH:FACTOR in seconds, seconds, multiple; got {text!r}"
        ) from None
    return {"every_secs": every, "length_secs": length, "factor": factor}


def _flood(share: float, fields: dict[str, Any]) -> dict[str, Any] | None:
    if share == 0:
        return None
    return {**(fields.get("flood") or {}), "share": share}


_PARSERS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "dialects": _dialects,
    "burst": _burst,
    "flood_share": _flood,
}


def parse_params(pairs: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values as YAML scalars) checked against the scenario's ``defaults``.

    Raises ``UsageError`` for a malformed pair or a key the scenario does not have.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--param wants KEY=VALUE, got {pair!r}")
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise UsageError(f"unknown parameter {key!r} for this scenario (known: {known})")
        try:
            params[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise UsageError(f"--param {key}: {exc}") from None
    return params


def _listing(defaults: dict[str, tuple[Any, dict[str, Any], str]]) -> str:
    from loadtest.report import describe_workload

    lines = []
    for name in sorted(defaults):
        workload, params, help_text = defaults[name]
        lines.append(f"{name}: {help_text}")
        lines.append(f"    workload: {describe_workload(workload)}")
        if params:
            lines.append("    params: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    lines.append(
        "ci: the CI profile (short runs of the key scenarios; pass/fail on loss, duplicates, order)"
    )
    return "\n".join(lines) + "\n"


# -- progress ------------------------------------------------------------------------------------


_SHOWN = frozenset({"sent", "received", "stored", "rate", "spool"})


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


class ProgressDisplay:
    """A ``loadtest.scenarios.Progress`` writing to ``stream`` (stderr).

    On a terminal one line refreshed in place; otherwise one line per second at most (and one
    whenever the stage changes; ``close`` prints the last one held back). Shows the label (scenario), stage, elapsed seconds since the
    display was made, and the counters: ``sent``, ``received``, a receive rate (from the last
    two calls, unless the scenario passes ``rate``; ``stored`` stands in for ``received``), ``spool``
    backlog, then any others.
    ``clock``: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.enabled, self.clock = label, enabled, clock
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = clock()
        self._last_print = float("-inf")
        self._last_stage = ""
        self._last: tuple[float, float] | None = None  # (time, received) of the previous call
        self._dirty = False
        self._held: str | None = None

    def __call__(self, stage: str, counters: dict[str, float]) -> None:
        if not self.enabled:
            return
        now = self.clock()
        line = self.line(stage, counters, now)
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r" + line[:width] + "\x1b[K")
            self._dirty = True
        elif now - self._last_print >= 1.0 or stage != self._last_stage:
            self.stream.write(line + "\n")
            self._last_print, self._held = now, None
        else:
            self._held = line  # printed by close() if nothing follows: the final counts
        self._last_stage = stage
        self.stream.flush()

    def line(self, stage: str, counters: dict[str, float], now: float) -> str:
        """The text of one progress line (also keeps the state for the rate)."""
        received = counters.get("received", counters.get("stored"))
        rate = counters.get("rate")
        if rate is None and received is not None and self._last is not None and now > self._last[0]:
            rate = (received - self._last[1]) / (now - self._last[0])
        if received is not None:
            self._last = (now, received)
        parts = [f"[{self.label}] {stage}", f"{now - self.started:6.1f} s"]
        for key in ("sent", "received", "stored"):
            if key in counters:
                parts.append(f"{key} {_count(counters[key])}")
        if rate is not None:
            parts.append(f"{rate:,.0f} msg/s")
        if "spool" in counters:
            parts.append(f"spool {_count(counters['spool'])}")
        parts += [f"{k} {_count(v)}" for k, v in counters.items() if k not in _SHOWN]
        return "  ".join(parts)

    def close(self) -> None:
        """End the refreshed line (a terminal) so the next output starts on a new line; print the
        last line held back by the once-a-second limit (not a terminal)."""
        if self._held is not None:
            self.stream.write(self._held + "\n")
            self.stream.flush()
            self._held = None
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False
