"""``busbridge run`` tunes its interpreter before serving: the GIL switch interval and the
cyclic GC's thresholds (``bridge.cli``; why and what they bought: loadtest/README)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from bridge import cli


def test_run_sets_the_gc_thresholds_and_the_switch_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[object] = []
    monkeypatch.setattr(cli.anyio, "run", lambda fn, *a, **k: served.append(fn))
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        gc.set_threshold(700, 10, 10)
        args = cli._parser().parse_args(
            ["run", "--machine", "m1", "--data-dir", str(tmp_path / "data")]
        )
        assert args.func(args) == 0
        assert served, "the bridge was not started"
        assert gc.get_threshold() == cli.GC_THRESHOLDS
        assert sys.getswitchinterval() == pytest.approx(cli.GIL_SWITCH_INTERVAL_SECS)
    finally:
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)
