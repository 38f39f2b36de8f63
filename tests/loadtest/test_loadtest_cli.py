"""``busbridge loadtest``: a real run of a scenario through the console script (real nats-server,
bridge process, ZMQ producer, probe), its table, JSON, PNG and HTML; usage errors; the progress
display. Counts and content only, never speed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bridge.cli import main
from loadtest.cli import ProgressDisplay, build_workload
from loadtest.plot import write_plot
from loadtest.report import read_json
from loadtest.scenarios import DEFAULTS, SCENARIOS
from loadtest.workload import Burst, FloodSpec, Workload
from tests.support.process import BUSBRIDGE

pytestmark = pytest.mark.timeout(180)

RATE, DURATION, PUBLISHERS = 400, 2, 3


def session_processes(sid: int, grace_secs: float = 5.0) -> list[str]:
    """Command lines of the live processes in session ``sid`` (what a CLI run left behind), after
    up to ``grace_secs`` for helpers that end by themselves once their parent is gone
    (multiprocessing's resource tracker)."""
    deadline = time.monotonic() + grace_secs
    while True:
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                    left.append(
                        (stat.parent / "cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode(errors="replace")
                    )
            except (OSError, IndexError, ValueError):
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


class CliRun:
    def __init__(self, tmp: Path) -> None:
        self.json, self.png, self.workdir = tmp / "steady.json", tmp / "steady.png", tmp / "work"
        cmd = [
            BUSBRIDGE,
            "loadtest",
            "steady",
            "--rate",
            str(RATE),
            "--duration",
            str(DURATION),
            "--publishers",
            str(PUBLISHERS),
            "--dialects",
            "D1=1,D3=1,D7=1",
            "--malformed-ratio",
            "0.05",
            "--json",
            str(self.json),
            "--plot",
            str(self.png),
            "--workdir",
            str(self.workdir),
        ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            self.stdout, self.stderr = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.returncode = proc.returncode
        self.left_behind = session_processes(proc.pid)  # the CLI led its own session


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    return CliRun(tmp_path_factory.mktemp("loadtest-cli"))


def test_run_passes_and_prints_the_table(run: CliRun) -> None:
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert out.startswith("steady: PASS")
    for row in ("workload", "messages", "dead letters", "latency ms", "checks"):
        assert f"\n  {row} " in out
    assert (
        f"{RATE} msg/s for {DURATION} s, {PUBLISHERS} publishers, D1=1,D3=1,D7=1, malformed 5%"
        in out
    )
    for check in ("lost", "duplicated", "out_of_order", "unexpected", "dead_letters"):
        assert f"PASS {check}: " in out
    assert "FAIL" not in out
    assert out.rstrip().endswith("== 1 scenario: 1 passed, 0 failed")


def test_json_holds_the_full_result(run: CliRun) -> None:
    [result] = read_json(run.json)
    assert result.scenario == "steady" and result.passed
    w = result.workload
    assert (w.rate_per_sec, w.duration_secs, w.publishers) == (RATE, DURATION, PUBLISHERS)
    assert w.dialects == {"D1": 1.0, "D3": 1.0, "D7": 1.0} and w.malformed_ratio == 0.05
    p = result.probe
    assert p is not None
    assert p.sent == RATE * DURATION
    assert p.expected + p.dead_letters_expected == p.sent and p.dead_letters_expected > 0
    assert (p.received_unique, p.lost, p.duplicated, p.out_of_order, p.unexpected) == (
        p.expected,
        0,
        0,
        0,
        0,
    )
    assert p.dead_letters_received == p.dead_letters_expected
    assert p.latency is not None and p.latency.count == p.expected
    assert sum(c for _, c in p.latency.histogram_ms) == p.expected
    assert sum(s for _, s, _ in p.timeline) == p.sent
    assert result.machine["cpus"] == os.cpu_count()


def test_png_plot_is_written(run: CliRun) -> None:
    from matplotlib.image import imread

    assert run.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(run.png).shape
    assert width == 1200 and height == 360  # one scenario: one row of two charts


def test_html_plot_is_self_contained(run: CliRun, tmp_path: Path) -> None:
    html = tmp_path / "steady.html"
    write_plot(read_json(run.json), html)
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 1
    assert "steady: PASS" in text and "end-to-end latency" in text and "throughput" in text
    assert "<script" not in text and "src=" not in text and "<link" not in text


def test_progress_goes_to_stderr_a_line_at_a_time(run: CliRun) -> None:
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("[steady] ")]
    assert len(lines) >= DURATION, run.stderr
    assert all("sent " in ln and "received " in ln and "spool " in ln for ln in lines)
    assert "\r" not in run.stderr  # not a terminal: plain lines
    assert f"sent {RATE * DURATION:,}" in lines[-1]


def test_run_leaves_no_process_and_keeps_the_workdir(run: CliRun) -> None:
    assert run.left_behind == []
    assert (run.workdir / "steady").is_dir()  # --workdir is kept: stores, bridge data, logs


def test_list_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--list"]) == 0
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert out.count(f"\n{name}: ") + out.startswith(f"{name}: ") == 1
    assert "\nci: " in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch"], "unknown scenario 'nosuch'"),
        ([], "name a scenario"),
        (["steady", "--param", "outage_secs=3"], "unknown parameter 'outage_secs'"),
        (["steady", "--dialects", "D9=1"], "unknown dialects ['D9']"),
        (["steady", "--rate", "-5"], "invalid workload"),
        (["steady", "--burst", "5:1"], "--burst wants EVERY:LENGTH:FACTOR"),
        (["steady", "--burst", "1:5:2"], "burst length_secs 5.0 > every_secs 1.0"),
        (["steady", "--plot", "out.pdf"], "must end in .png or .html"),
        (["steady", "--runs", "0"], "--runs must be >= 1"),
        (["steady", "--inject", "loss=3"], "belong to the CI profile"),
        (["ci", "--rate", "10"], "fixed workloads; drop --rate"),
        (["ci", "--inject", "lose=3"], "--inject wants loss=N or duplicate=N"),
        (["ci", "--only", "throughput"], "not in the CI profile: throughput"),
    ],
)
def test_bad_usage_exits_2_and_says_why(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["loadtest", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_scenario_that_cannot_run_is_a_failed_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crash.json"
    assert (
        main(["loadtest", "bridge_crash", "--duration", "2", "--no-progress", "--json", str(out)])
        == 1
    )
    [result] = read_json(out)
    assert [(c.name, c.ok) for c in result.checks] == [("completed", False)]
    assert "needs duration_secs >= kill_after_secs + down_secs + 1" in result.checks[0].detail
    assert "FAIL completed: ValueError" in capsys.readouterr().out


def test_workload_options_override_the_scenario_defaults() -> None:
    from argparse import Namespace

    default = DEFAULTS["steady"][0]
    args = Namespace(
        rate=1500.0,
        duration=None,
        publishers=2,
        dialects="d2=3,D5",
        duplicate_ratio=0.25,
        malformed_ratio=None,
        burst="4:0.5:3",
        flood_share=0.3,
        pad_bytes=None,
        seed=7,
    )
    w = build_workload(default, args)
    assert isinstance(w, Workload)
    assert (w.rate_per_sec, w.duration_secs, w.publishers, w.seed) == (
        1500.0,
        default.duration_secs,
        2,
        7,
    )
    assert w.dialects == {"D2": 3.0, "D5": 1.0} and w.duplicate_ratio == 0.25
    assert w.burst == Burst(every_secs=4.0, length_secs=0.5, factor=3.0)
    assert w.flood == FloodSpec(share=0.3)


def test_progress_display_terminal_and_plain() -> None:
    now = [100.0]
    tty, plain = io.StringIO(), io.StringIO()
    on_tty = ProgressDisplay("steady", stream=tty, tty=True, clock=lambda: now[0])
    on_file = ProgressDisplay("steady", stream=plain, tty=False, clock=lambda: now[0])
    for t, received in ((0.5, 0), (1.0, 500), (1.4, 700), (2.0, 1000)):
        now[0] = 100.0 + t
        for display in (on_tty, on_file):
            display("steady", {"sent": received + 10, "received": received, "spool": 3})
    on_tty.close()
    assert tty.getvalue().count("\r") == 4 and tty.getvalue().endswith("\n")
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2  # at most one a second: t=0.5 and t=2.0 (the stage did not change)
    assert lines[1] == "[steady] steady     2.0 s  sent 1,010  received 1,000  500 msg/s  spool 3"
    now[0] = 102.5
    on_file("draining", {"received": 1005})  # a new stage: printed at once
    on_file("draining", {"received": 1010})  # held back (within the second) ...
    on_file.close()  # ... until the display is closed: the final counts are always shown
    assert plain.getvalue().splitlines()[2:] == [
        "[steady] draining     2.5 s  received 1,005  10 msg/s",
        "[steady] draining     2.5 s  received 1,010",
    ]


def test_sigterm_stops_the_run_and_every_process_it_started(tmp_path: Path) -> None:
    """``timeout``/systemd/``kill`` send SIGTERM: the run is cancelled like Ctrl-C, its teardown
    stops the nats-server, the bridge and the producer, and the exit status says so (143)."""
    cmd = [
        BUSBRIDGE,
        "loadtest",
        "steady",
        "--rate",
        "300",
        "--duration",
        "60",
        "--no-progress",
        "--workdir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not any(
            "busbridge run" in c or "busbridge\x00run" in c for c in session_processes(proc.pid, 0)
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "the bridge never started"
            time.sleep(0.2)
        time.sleep(1.0)  # traffic flowing
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    assert session_processes(proc.pid) == []
