"""``busbridge console`` with 100k events in the stream: page load and live-feed latency.

Run: ``.venv/bin/python -m loadtest.console_bench [--events 100000] [--probes 20] [--json FILE]``
(needs Chromium at ``/usr/bin/chromium`` and the ``playwright`` package of the ``test`` extra).

What it does, on this machine, with real processes:

1. a nats-server (port 0, temp store) and a ``busbridge run`` bridge process (``BridgeProcess``,
   health on) on it;
2. fills ERRBUS with ``--events`` ``ErrorEvent``s published straight into JetStream with the
   bridge's subjects and headers (``OutboundBuilder``; 2 machines, 60 agents, ~2,000
   fingerprints, every severity, receive times spread over the last 24 h), then the bridge
   adds live ones;
3. starts ``busbridge console`` (``ConsoleProcess``) and waits until it has read the stream;
4. **page load**: a fresh headless Chromium page per run, from ``goto /#/issues`` until the
   issues table has its rows (and the same for ``#/feed``), ``--loads`` times;
5. **live-feed latency**: with the feed open, ``--probes`` single D1 frames sent over ZMQ to the
   bridge; the time from the ZMQ send to the row being in the page (a ``MutationObserver``
   stamps it with ``performance.timeOrigin + performance.now()``, compared with the send's wall
   clock on the same machine).

Prints medians, p95 and max, and the console's own time to read the stream; ``--json`` writes
them. ``--screenshots DIR`` then adds a flood, dead letters, a resolved issue's regression and a
fleet phase request, and saves each main view at 1366x768 as ``DIR/console-<view>.png``.
Everything started is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.adapters.nats_server import NatsServerProcess, terminate
from loadtest.harness import BUSBRIDGE, BridgeProcess, free_port

__all__ = ["BROWSER_ARGS", "CHROMIUM", "ConsoleProcess", "fill_stream", "main"]

CHROMIUM = os.environ.get("BUSBRIDGE_CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class ConsoleProcess:
    """``busbridge console -c <bridge yaml> --port <free> [--console-config FILE]`` as a child
    process; ``start()`` waits until its reader caught up with the stream; ``stop()`` SIGTERMs
    it by its PID."""

    def __init__(
        self,
        workdir: Path,
        bridge_config: Path,
        *,
        settings: str = "",
        webhooks: tuple[str, ...] = (),
        name: str = "console",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [BUSBRIDGE, "console", "-c", str(bridge_config), "--port", str(self.port)]
        if settings:
            path = workdir / f"{name}.yaml"
            path.write_text(settings)
            self.args += ["--console-config", str(path)]
        for hook in webhooks:
            self.args += ["--webhook", hook]
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_secs: float = 120.0) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(self.args, stderr=err, stdout=err)
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"console exited {self.proc.returncode}:\n{self.log.read_text()}"
                )
            status = self.status()
            if status and status.get("caught_up"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"console did not catch up:\n{self.log.read_text()}")

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self, timeout_secs: float = 20.0) -> int:
        if self.proc is None:
            return 0
        terminate(self.proc, timeout_secs)
        return self.proc.returncode


async def fill_stream(url: str, count: int, *, now: datetime | None = None) -> float:
    """Publish ``count`` ErrorEvents into ERRBUS (created by the bridge) like the bridge does;
    returns the seconds it took. A realistic mix: 2 machines, 60 agents, ~2,000 fingerprints."""
    import nats

    from bridge.pipeline.fingerprint import fingerprint
    from bridge.pipeline.outbound import OutboundBuilder
    from contracts.messages import Dialect, ErrorEvent, LegacyOrigin, Severity
    from contracts.subjects import Subjects

    rng = random.Random(7)
    now = now or datetime.now(UTC)
    severities = [
        Severity.INFO,
        Severity.WARNING,
        Severity.ERROR,
        Severity.ERROR,
        Severity.CRITICAL,
    ]
    dialects = [None, Dialect.ERRPUB_ENVELOPE, Dialect.PC2_TOPIC, Dialect.PREFIX_FLAT]
    kinds = [
        ("ConnectionError", "connection to tcp://10.0.{n}.7:7140 refused"),
        ("TimeoutError", "request {n} to the memory scheduler timed out after 5000 ms"),
        ("vram_exhausted", "CUDA out of memory on model slot {n}"),
        ("ValueError", "invalid payload in step {n}: missing field"),
    ]
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        builder = OutboundBuilder(Subjects(), "bench-fill", nc.max_payload)
        started = time.perf_counter()
        pending = []
        for i in range(count):
            machine = "MainPC" if i % 3 else "PC2"
            source = f"Agent{rng.randrange(60):02d}"
            error_type, template = kinds[rng.randrange(len(kinds))]
            message = template.format(n=rng.randrange(8)) + f" [variant v{rng.randrange(9)}]"
            dialect = dialects[rng.randrange(len(dialects))]
            at = now - timedelta(seconds=rng.uniform(0, 86400))
            ev = ErrorEvent(
                event_id=f"bench-{i}",
                occurred_at=at,
                received_at=at,
                machine=machine,
                source=source,
                severity=severities[rng.randrange(len(severities))],
                error_type=error_type,
                message=message,
                fingerprint=fingerprint(source, error_type, message),
                legacy=LegacyOrigin(dialect=dialect) if dialect else None,
            )
            out = builder.build(ev)
            pending.append(await js.publish_async(out.subject, out.payload, headers=out.headers))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await nc.close()


_STAMP_JS = """
() => {
  window.__seen = {};
  const tbody = document.querySelector('#feed tbody');
  new MutationObserver(() => {
    for (const td of tbody.querySelectorAll('td.msg')) {
      const m = td.textContent.match(/probe-(\\d+)/);
      if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = performance.timeOrigin + performance.now();
    }
  }).observe(tbody, {childList: true});
}
"""


def _probe_frame(n: int) -> bytes:
    payload = {
        "message_type": "error_report",
        "source": "BenchProbe",
        "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "error_data": {
            "error_id": f"probe-{os.getpid()}-{n}",
            "error_type": "LatencyProbe",
            "severity": "error",
            "details": f"probe-{n} sent for the feed latency",
        },
    }
    return b"ERROR:" + json.dumps(payload).encode()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(_pct(values, 0.95) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def _measure(console_url: str, zmq_endpoint: str, loads: int, probes: int) -> dict[str, Any]:
    import zmq
    from playwright.sync_api import sync_playwright

    from loadtest.replay import connect_publishers

    out: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            for view, selector in (
                ("issues", "#issues tbody tr[data-key]"),
                ("feed", "#feed tbody tr[data-key]"),
            ):
                times = []
                for _ in range(loads):
                    page = browser.new_page(viewport={"width": 1366, "height": 768})
                    t0 = time.perf_counter()
                    page.goto(f"{console_url}/#/{view}")
                    page.wait_for_selector(selector, timeout=60_000)
                    times.append(time.perf_counter() - t0)
                    page.close()
                out[f"page_load_{view}"] = _summary(times)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"{console_url}/#/feed")
            page.wait_for_selector("#feed tbody tr[data-key]", timeout=60_000)
            page.wait_for_function("document.querySelector('#conn').dataset.caughtUp === '1'")
            page.evaluate(_STAMP_JS)
            latencies = []
            with zmq.Context() as ctx:
                [sock] = connect_publishers(ctx, zmq_endpoint, 1)
                try:
                    for n in range(probes):
                        sent = time.time()
                        sock.send(_probe_frame(n))
                        page.wait_for_function(f"'{n}' in window.__seen", timeout=30_000)
                        seen = page.evaluate(f"window.__seen['{n}']") / 1000.0
                        latencies.append(seen - sent)
                        time.sleep(0.3)
                finally:
                    sock.close(linger=1000)
            out["live_feed_latency"] = _summary(latencies)
        finally:
            browser.close()
    return out


BENCH_BRIDGE = """
health: {enabled: true, heartbeat_interval_secs: 2}
phase: {source: kv}
flood:
  enabled: true
  summary_interval_secs: 1
  default_threshold: 100000
  rules: [{name: memory_error, match: "(?i)out of memory", threshold: 3, window_secs: 300,
           escalate_to: critical}]
"""


def _d1(source: str, error_type: str, text: str, severity: str = "error") -> bytes:
    payload = {
        "message_type": "error_report",
        "source": source,
        "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "error_data": {
            "error_id": f"shot-{random.getrandbits(64):016x}",
            "error_type": error_type,
            "severity": severity,
            "details": text,
        },
    }
    return b"ERROR:" + json.dumps(payload).encode()


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _populate(console_url: str, bridge: BridgeProcess) -> None:
    """A flood, dead letters, a regression (and its alerts) and a fleet phase request."""
    import zmq

    from loadtest.replay import connect_publishers
    from loadtest.traffic import malformed

    with zmq.Context() as ctx:
        [sock] = connect_publishers(ctx, bridge.endpoint, 1)
        try:
            for _ in range(40):
                sock.send(_d1("ModelManager", "MemoryError", "CUDA out of memory on slot 3"))
            for n in range(4):
                sock.send_multipart(malformed(5, n))
            sock.send(_d1("Vision", "DiskFull", "disk full on /var/lib/models", "critical"))
            time.sleep(1.5)
            found = _get(f"{console_url}/api/issues?q=DiskFull")["rows"]
            if found:
                fp = found[0]["fingerprint"]
                _post(
                    f"{console_url}/api/issues/{fp}/state",
                    {"state": "resolved", "note": "cleaned /var/lib/models", "by": "ops"},
                )
                time.sleep(0.5)
                sock.send(_d1("Vision", "DiskFull", "disk full on /var/lib/models", "critical"))
            for n in range(25):
                sock.send(
                    _d1(
                        "Agent07", "ConnectionError", f"connection to tcp://10.0.0.{n}:7140 refused"
                    )
                )
        finally:
            sock.close(linger=2000)
    subprocess.run(
        [BUSBRIDGE, "phase", "set", "dual", "--fleet", "-c", str(bridge.config), "--wait", "10"],
        capture_output=True,
        check=False,
    )
    time.sleep(3.0)


def _screenshots(console_url: str, out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"{console_url}/#/issues")
            page.wait_for_function("document.querySelector('#conn').dataset.caughtUp === '1'")

            def shot(name: str, hash_: str, ready: str, then: str | None = None) -> None:
                page.goto(f"{console_url}/{hash_}")
                page.wait_for_selector(ready)
                if then:
                    page.click(then)
                    page.wait_for_selector("#drawer:not([hidden])")
                page.wait_for_timeout(600)
                path = out_dir / f"console-{name}.png"
                page.screenshot(path=str(path))
                shots.append(path)
                page.keyboard.press("Escape")

            shot("issues", "#/issues", "#issues tbody tr[data-key]")
            shot(
                "issue",
                "#/issues",
                "#issues tbody tr[data-state=regression]",
                "#issues tbody tr[data-state=regression]",
            )
            shot("feed", "#/feed", "#feed tbody tr[data-key]")
            shot("event", "#/feed", "#feed tbody tr[data-key]", "#feed tbody tr[data-key]")
            shot("agent", "#/agent/MainPC/Agent07", "svg.chart")
            shot("floods", "#/floods", "#floods-active tbody tr, #floods-ended tbody tr")
            shot("dead-letters", "#/dlq", "#dlq tbody tr[data-key]", "#dlq tbody tr[data-key]")
            shot("bridges", "#/bridges", "section.bridge")
            shot("alerts", "#/alerts", "#alerts tbody tr[data-rule]")
        finally:
            browser.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--loads", type=int, default=5, help="page loads per view")
    ap.add_argument("--probes", type=int, default=20, help="live-feed probes")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--screenshots", metavar="DIR", help="save the main views as PNGs into DIR")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        work = Path(tmp)
        server = NatsServerProcess(work / "nats", port=0)
        server.start()
        bridge = BridgeProcess(work, server.url, extra=BENCH_BRIDGE, log_level="WARNING")
        console = ConsoleProcess(work, bridge.config)
        try:
            bridge.start()
            fill_secs = asyncio.run(fill_stream(server.url, args.events))
            print(f"filled {args.events:,} events in {fill_secs:.1f} s", file=sys.stderr)
            t0 = time.perf_counter()
            console.start()
            read_secs = time.perf_counter() - t0
            status = console.status() or {}
            print(
                f"console caught up in {read_secs:.1f} s ({status.get('events')} events, "
                f"{status.get('issues')} issues)",
                file=sys.stderr,
            )
            result = {
                "events": args.events,
                "fill_secs": round(fill_secs, 2),
                "console_catch_up_secs": round(read_secs, 2),
                "issues": status.get("issues"),
                **_measure(console.url, bridge.endpoint, args.loads, args.probes),
            }
            if args.screenshots:
                _populate(console.url, bridge)
                result["screenshots"] = [
                    str(p) for p in _screenshots(console.url, Path(args.screenshots))
                ]
        finally:
            console.stop()
            bridge.stop()
            server.stop()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
