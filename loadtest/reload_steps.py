"""The config rewrites of ``reload_under_load``: each edits a running bridge's YAML and names the
reload result the bridge must count (``busbridge_config_reloads_total{result}``,
bridge/config/reload.py).

The steps change settings a bridge applies live (``LIVE_PATHS``: flood control switched on
with thresholds no load event reaches, its rules swapped, the log level, publish timeouts),
then write one invalid file (refused, the running config kept) and one restart-bound change
(refused by name), and finally switch flood control off again. Flood thresholds stay far
above any load so no event is suppressed: the run must still store every event once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["RELOAD_STEPS", "ReloadStep"]

Doc = dict[str, Any]
_NEVER = 1_000_000_000  # a flood threshold no load run reaches


class ReloadStep(NamedTuple):
    """``edit`` returns the next file's YAML document from the current one (not modified)."""

    name: str
    edit: Callable[[Doc], Doc]
    expect: str  # the reload result: applied / invalid / refused


def _with(section: str, **values: Any) -> Callable[[Doc], Doc]:
    def edit(doc: Doc) -> Doc:
        out = copy.deepcopy(doc)
        if section:
            out[section] = {**(out.get(section) or {}), **values}
        else:
            out.update(values)
        return out

    return edit


def _other_log_level(doc: Doc) -> Doc:
    return _with("", log_level="INFO" if doc.get("log_level", "INFO") != "INFO" else "WARNING")(doc)


def _bump_rcvhwm(doc: Doc) -> Doc:
    return _with("zmq", rcvhwm=int((doc.get("zmq") or {}).get("rcvhwm", 1_000_000)) + 1)(doc)


_RULE = {
    "name": "loadtest_reload",
    "match": "^never-matches-a-load-event$",
    "threshold": 1,
    "window_secs": 5.0,
}

RELOAD_STEPS: tuple[ReloadStep, ...] = (
    ReloadStep(
        "flood_on", _with("flood", enabled=True, rules=[], default_threshold=_NEVER), "applied"
    ),
    ReloadStep("flood_rules", _with("flood", rules=[_RULE], default_window_secs=30.0), "applied"),
    ReloadStep("log_level", _other_log_level, "applied"),
    ReloadStep(
        "publish_timeouts", _with("publish", ack_timeout_secs=3.0, retry_max_secs=1.0), "applied"
    ),
    ReloadStep("invalid_file", _with("flood", default_threshold=-3), "invalid"),
    ReloadStep("restart_bound", _bump_rcvhwm, "refused"),
    ReloadStep("flood_off", _with("flood", enabled=False, rules=[]), "applied"),
)
