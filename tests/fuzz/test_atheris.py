"""Bounded atheris runs of ``tests/fuzz/harness.py`` (skipped when atheris is not installed).

Each target runs in a child process (libFuzzer exits the process when done) for a fixed
number of runs, capped in time; a finding makes the child exit non-zero with the input
saved under the test's temp dir.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target", ["decode", "config"])
def test_bounded_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    flags = [
        "-runs=20000",
        "-max_total_time=10",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.harness", target, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done" in proc.stderr and "stat::number_of_executed_units" in proc.stderr
    assert not list(tmp_path.glob("crash-*"))
