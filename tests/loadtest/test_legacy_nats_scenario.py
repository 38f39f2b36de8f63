"""The ``legacy_nats`` scenario alone, as the CI profile runs it (final recount included): library A
and B payloads on ``errors.>`` through a real nats-server and ``busbridge run`` process are each
stored once in ERRBUS, in per-agent order, and the legacy durable ends fully acknowledged. And
it can fail: library A copies published under fresh ids (so nothing can collapse them) turn it
red on the duplicate checks, while loss, order and the consumer stay green.

Judged on loss, copies, order and acks only; nothing here looks at speed.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from loadtest.ci_profile import PROFILE, ProfileEntry, run_profile, select
from loadtest.results import ScenarioResult
from loadtest.scenarios import no_progress
from loadtest.scenarios.legacy_nats import legacy_payload
from loadtest.traffic import find_token

pytestmark = pytest.mark.integration


async def _run(tmp_path: Path, entry: ProfileEntry) -> ScenarioResult:
    [result] = await run_profile([entry], tmp_path, lambda _name: no_progress)
    return result


def _failing(result: ScenarioResult) -> set[str]:
    return {c.name for c in result.checks if not c.ok}


@pytest.mark.timeout(180)
async def test_profile_entry_passes_every_check(tmp_path: Path) -> None:
    [entry] = select(["legacy_nats"])
    result = await _run(tmp_path, entry)
    assert result.passed, [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    names = {c.name for c in result.checks}
    assert {
        "lost",
        "duplicated",
        "out_of_order",
        "copies_sent",
        "stored_once",
        "legacy_acked",
        "legacy_consumer_settled",
        "stream_lost",
        "stream_duplicated",
    } <= names
    extra = result.extra
    assert result.probe is not None and result.probe.expected == extra["legacy_errors"] > 0
    # copies really went out, and each error was stored once: the rest acked as duplicates
    assert extra["legacy_messages_published"] > extra["legacy_errors"]
    assert extra["intake_outcomes"]["stored"] == extra["legacy_errors"]
    assert extra["intake_outcomes"]["duplicate"] == extra["library_a_copies"]
    assert extra["legacy_consumer"] == {"pending": 0, "unacknowledged": 0}


@pytest.mark.timeout(180)
async def test_copies_under_fresh_ids_turn_it_red_on_the_duplicate_checks(tmp_path: Path) -> None:
    [entry] = select(["legacy_nats"])
    faulty = ProfileEntry(
        scenario=entry.scenario,
        workload={**entry.workload, "duration_secs": 2.0},
        params={"fault": "copy_ids"},
    )
    result = await _run(tmp_path, faulty)
    assert not result.passed
    assert _failing(result) == {"duplicated", "stored_once", "stream_duplicated"}
    assert result.probe is not None
    assert result.probe.duplicated == result.extra["library_a_copies"] > 0
    assert result.probe.lost == result.probe.out_of_order == 0


def test_payloads_look_like_the_libraries_and_carry_the_token() -> None:
    rng = random.Random(1)
    errors = [
        legacy_payload(rng, 2, n, library_b_share=0.3, critical_share=0.3, pad_bytes=10)
        for n in range(60)
    ]
    live = Path(__file__).resolve().parents[3] / "shared" / "corpus"
    rows = [
        json.loads(line)
        for line in (live / "legacy_nats_live.sample.jsonl").read_text().splitlines()
        if line
    ]
    captured_keys = {
        row["lib"]: list(json.loads(base64.b64decode(row["payload_b64"])))
        for row in rows
        if row["kind"] == "publish"
    }
    by_library = {e.library for e in errors}
    assert by_library == {"A", "B"}
    for n, e in enumerate(errors):
        bodies = [json.loads(p) for _, p, _ in e.messages]
        assert list(bodies[0]) == captured_keys[e.library]  # the legacy field names, in order
        assert all(find_token(p) == (2, n) for _, p, _ in e.messages)
        assert "+" not in bodies[0]["timestamp"] and "Z" not in bodies[0]["timestamp"]
        if e.library == "A":
            subjects = [s for s, _, _ in e.messages]
            expected = ["errors.events", "errors.agents.LoadAgent002"]
            if e.critical:
                expected += ["errors.system", "errors.system.critical"]
            assert subjects == expected
            assert len({b["id"] for b in bodies}) == 1  # every copy under the same id
            assert len({p for _, p, _ in e.messages}) == 1
        else:
            [(subject, _, headers)] = e.messages
            assert subject == f"errors.{bodies[0]['severity'].lower()}.LoadAgent002"
            assert headers is None
    assert any(e.critical for e in errors if e.library == "A")
    assert [e.scenario for e in PROFILE][-1] == "legacy_nats"
