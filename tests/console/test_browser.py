"""``busbridge console`` in headless Chromium against a real bridge, nats-server and ZMQ traffic.

Each test uses its own agent / error type names (the stack is shared by the module) and waits
for what it expects with Playwright's auto-waiting ``expect`` (an upper bound, never a timing
assertion; latency is measured by ``loadtest/console_bench.py``).
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import anyio
import nats
import pytest

from bridge.pipeline.fingerprint import fingerprint
from contracts.codec import encode
from contracts.messages import ErrorEvent, Severity
from loadtest.traffic import flood_frames, frames
from tests.console.conftest import Stack, open_console, unique

pytestmark = pytest.mark.integration


def _expect():
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    return expect


def _d1(source: str, error_type: str, text: str, severity: str = "error") -> list[bytes]:
    """A D1 frame whose stored message is ``text`` (unique ``error_id``)."""
    payload = {
        "message_type": "error_report",
        "source": source,
        "timestamp": "2026-11-21T08:02:16.503872",
        "error_data": {
            "error_id": unique("id-"),
            "error_type": error_type,
            "severity": severity,
            "details": text,
        },
    }
    return [b"ERROR:" + json.dumps(payload).encode()]


def _issue_row(page, title_text: str):
    return page.locator("#issues tbody tr[data-key]", has_text=title_text)


def test_live_feed_shows_a_zmq_event_without_a_reload(stack: Stack, page) -> None:
    expect = _expect()
    page.goto(f"{stack.url}/#/feed")
    expect(page.locator("#feed")).to_be_visible()
    page.evaluate("window.__marker = 'same page'")
    token = unique("live-")
    stack.send(_d1("LiveAgent", "LiveError", f"{token} broke"))
    row = page.locator("#feed tbody tr", has_text=token)
    expect(row).to_be_visible()
    assert page.evaluate("window.__marker") == "same page"  # pushed, not reloaded
    expect(row).to_contain_text("LiveAgent")
    expect(row).to_contain_text("ZMQ errpub_envelope")
    row.click()
    drawer = page.locator("#drawer")
    expect(drawer).to_be_visible()
    expect(page.locator("#contract")).to_contain_text(f'"message": "{token} broke"')
    expect(page.locator("#legacy")).to_contain_text("errpub_envelope")
    expect(page.locator("#legacy")).to_contain_text("raw_severity")
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()


def test_filters_narrow_the_feed(stack: Stack, page) -> None:
    expect = _expect()
    tag = unique("flt")
    stack.send(
        _d1(f"{tag}One", "AlphaError", f"{tag} alpha"),
        _d1(f"{tag}Two", "BetaError", f"{tag} beta", severity="critical"),
        _d1(f"{tag}Two", "BetaError", f"{tag} gamma", severity="critical"),
    )
    page.goto(f"{stack.url}/#/feed")
    rows = page.locator("#feed tbody tr[data-key]", has_text=tag)
    expect(rows).to_have_count(3)
    page.reload()  # the filter menus list the new agents
    page.wait_for_function("document.querySelector('#conn').dataset.caughtUp === '1'")
    page.select_option("#feed-bar select[name=source]", f"{tag}Two")
    expect(rows).to_have_count(2)
    page.select_option("#feed-bar select[name=severity]", "error")
    expect(rows).to_have_count(0)
    page.select_option("#feed-bar select[name=severity]", "critical")
    page.fill("#q", f"{tag} gamma")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("gamma")
    page.select_option("#feed-bar select[name=range]", "custom")
    page.fill("#feed-bar input[name=to]", "2020-01-01T00:00:00")
    page.locator("#feed-bar input[name=to]").dispatch_event("change")
    expect(rows).to_have_count(0)
    # a new event matching the filters appears live; one that does not stays out
    page.select_option("#feed-bar select[name=range]", "all")
    page.fill("#q", "")
    stack.send(_d1(f"{tag}One", "AlphaError", f"{tag} delta"))
    stack.send(_d1(f"{tag}Two", "BetaError", f"{tag} epsilon", severity="critical"))
    expect(page.locator("#feed tbody tr", has_text=f"{tag} epsilon")).to_be_visible()
    expect(page.locator("#feed tbody tr", has_text=f"{tag} delta")).to_have_count(0)


def test_repeated_errors_group_into_one_issue_with_the_right_count(stack: Stack, page) -> None:
    expect = _expect()
    kind = unique("GroupError")
    stack.send(*[flood_frames(7, n, source="GroupAgent", error_type=kind) for n in range(5)])
    page.fill("#q", kind)
    row = _issue_row(page, kind)
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-count", "5")
    expect(row.locator("td.count")).to_have_text("5")
    expect(row).to_contain_text("GroupAgent")
    stack.send(flood_frames(7, 5, source="GroupAgent", error_type=kind))
    expect(row).to_have_attribute("data-count", "6")  # live, same row


def test_resolved_issue_comes_back_as_a_regression_and_fires_its_alert(stack: Stack, page) -> None:
    expect = _expect()
    kind = unique("RegressError")
    stack.send(_d1("RegressAgent", kind, "disk full on /var/lib"))
    page.fill("#q", kind)
    row = _issue_row(page, kind)
    expect(row).to_have_count(1)
    fingerprint = row.get_attribute("data-key")
    row.click()
    page.fill("#note", "freed the disk")
    page.fill("#by", "tester")
    page.click("#btn-resolve")
    expect(row).to_have_count(0)  # gone from the unresolved list
    page.select_option("#issues-bar select[name=state]", "resolved")
    expect(row).to_have_attribute("data-state", "resolved")

    stack.send(_d1("RegressAgent", kind, "disk full on /var/lib"))
    page.select_option("#issues-bar select[name=state]", "unresolved")
    expect(row).to_have_attribute("data-state", "regression")
    expect(row.locator(".pill.regression")).to_be_visible()
    expect(page.locator(".toast", has_text="regression")).to_be_visible()  # the page is told

    page.click("#nav a[data-view=alerts]")
    alert = page.locator(f"#alerts tbody tr[data-key='{fingerprint}'][data-rule=regression]")
    expect(alert).to_have_count(1)

    def regressions() -> list[dict]:
        return [
            a
            for a in stack.hook.received
            if a["rule"] == "regression" and a["fingerprint"] == fingerprint
        ]

    deadline = time.monotonic() + 30
    while not regressions() and time.monotonic() < deadline:
        time.sleep(0.05)
    [posted] = regressions()
    assert posted["type"] == "alert_fired" and posted["kind"] == "regression"
    assert posted["source"] == "RegressAgent" and posted["error_type"] == kind
    time.sleep(1.0)  # both consoles evaluated the event: still one webhook call
    assert len(regressions()) == 1


def test_a_row_pressed_while_the_list_updates_still_opens_its_issue(stack: Stack, page) -> None:
    """A live update that lands between mouse-down and mouse-up must not eat the click: the list
    holds its re-render while a pointer is pressed on it and applies it after the release."""
    expect = _expect()
    kind = unique("PressError")
    stack.send(_d1("PressAgent", kind, "queue full on /data"))
    page.fill("#q", kind)
    row = _issue_row(page, kind)
    expect(row).to_have_attribute("data-count", "1")
    box = None
    for _ in range(50):  # None while a re-render has the row detached
        box = row.bounding_box()
        if box is not None:
            break
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    stack.send(_d1("PressAgent", kind, "queue full on /data"))  # the same issue
    page.wait_for_function(
        """async (kind) => {
            const r = await fetch(`/api/issues?q=${encodeURIComponent(kind)}`).then((r) => r.json());
            return r.rows.length === 1 && r.rows[0].count === 2;
        }""",
        arg=kind,
        polling=100,
    )
    page.wait_for_timeout(1500)  # a live re-render (pushed every 0.1 s, debounced 0.3 s) lands here
    page.mouse.up()
    expect(page.locator("#note")).to_be_visible()
    expect(row).to_have_attribute("data-count", "2")  # the held update, applied after the release


def test_a_note_being_written_survives_a_live_refresh_of_its_issue(stack: Stack, page) -> None:
    expect = _expect()
    kind = unique("DraftError")
    stack.send(_d1("DraftAgent", kind, "cache warmup failed"))
    page.fill("#q", kind)
    _issue_row(page, kind).click()
    events = page.locator("#drawer dl.kv dd").nth(1)
    expect(events).to_have_text("1")
    page.locator("#note").type("warmup runs before the ")
    stack.send(_d1("DraftAgent", kind, "cache warmup failed"))  # the same issue, while typing
    expect(events).to_have_text("2")  # the drawer was rendered again
    page.keyboard.type("cache is mounted")  # the focus stayed in the note
    expect(page.locator("#note")).to_have_value("warmup runs before the cache is mounted")
    page.click("#btn-resolve")
    expect(page.locator("#history")).to_contain_text("warmup runs before the cache is mounted")
    expect(page.locator("#note")).to_have_value("")  # the decision took it


def test_a_flood_shows_in_the_flood_view(stack: Stack, page) -> None:
    expect = _expect()
    agent = unique("FloodAgent")
    stack.send(*[flood_frames(8, n, source=agent, error_type="FloodTest") for n in range(12)])
    page.click("#nav a[data-view=floods]")
    row = page.locator("#floods-active tbody tr, #floods-ended tbody tr", has_text=agent)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("console_test")
    expect(row.locator("td.suppressed")).to_have_text(re.compile(r"^(9|[1-9][0-9]+)$"))
    row.click()
    expect(page.locator("#drawer")).to_contain_text("Suppressed per summary")


def test_a_dead_letter_shows_its_bytes(stack: Stack, page) -> None:
    expect = _expect()
    token = unique("dl")
    bad = b'ERROR:{"agent": "DLAgent", "message": "' + token.encode() + b'" \xff'
    stack.send([bad])
    page.click("#nav a[data-view=dlq]")
    row = page.locator("#dlq tbody tr", has_text=token)
    expect(row).to_have_count(1)
    row.click()
    hexdump = page.locator("#frame-0-hex")
    expect(hexdump).to_contain_text("45 52 52 4f 52 3a 7b 22")  # ERROR:{"
    expect(hexdump).to_contain_text(" ff")
    expect(page.locator("#frame-0-text")).to_contain_text(token)
    expect(page.locator("#frame-0-text")).to_contain_text("\\xff")
    expect(page.locator("#drawer")).to_contain_text("invalid_utf8")


def test_a_dead_letter_storm_shows_as_stored_ones_plus_a_summary(stack: Stack, page) -> None:
    """Dead-letter flood control (threshold 3 here): 3 stored with their bytes, the other 9
    as a summary row with the count, whose drawer shows the key and a sample."""
    expect = _expect()
    token = unique("storm")
    stack.send(*[[b"\xfe\xfdSTORM " + f"{token} {n}".encode()] for n in range(12)])
    page.click("#nav a[data-view=dlq]")
    rows = page.locator("#dlq tbody tr", has_text=token)
    summaries = rows.filter(has_text="suppressed")
    expect(summaries.first).to_be_visible()

    def counts() -> tuple[int, int]:  # (stored rows, suppressed in summary rows)
        texts = rows.all_inner_texts()
        found = [
            int(m.replace(",", "")) for t in texts for m in re.findall(r"\+([\d,]+) suppressed", t)
        ]
        return len(texts) - len(found), sum(found)

    deadline = time.monotonic() + 30
    while counts() != (3, 9) and time.monotonic() < deadline:  # a summary per second
        page.reload()
        time.sleep(0.5)
    assert counts() == (3, 9)
    summaries.first.click()
    drawer = page.locator("#drawer")
    expect(drawer).to_contain_text("Dead-letter summary")
    expect(drawer).to_contain_text("in this summary")
    expect(drawer).to_contain_text("fefd53544f524d20")  # the key: the first 8 bytes as hex
    expect(page.locator("#frame-0-text")).to_contain_text(token)


def test_an_agent_on_two_machines_is_named_once_in_its_issue_row(stack: Stack, page) -> None:
    """The same error from ``TwinAgent`` on this bridge's machine (ZMQ) and on PC2 (the other
    bridge's event, published to the stream as that bridge would): one issue, two machines,
    one agent name in the Agents column."""
    expect = _expect()
    kind = unique("TwinError")
    stack.send(_d1("TwinAgent", kind, "disk full"))
    event = ErrorEvent(
        event_id=unique("twin-"),
        occurred_at=None,
        received_at=datetime.now(UTC),
        machine="PC2",
        source="TwinAgent",
        severity=Severity.ERROR,
        error_type=kind,
        message="disk full",
        fingerprint=fingerprint("TwinAgent", kind, "disk full"),
    )
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        pool.submit(anyio.run, _publish, stack.server.url, event).result(timeout=30)
    page.goto(f"{stack.url}/#/issues")
    row = _issue_row(page, kind)
    expect(row).to_contain_text("PC2")
    agents = row.locator("td[title*='/TwinAgent']")  # the Agents cell: machine/agent keys
    expect(agents).to_have_attribute("title", re.compile(r"PC2/TwinAgent"))
    expect(agents).to_have_text("TwinAgent")  # listed once, not once per machine


async def _publish(url: str, event: ErrorEvent) -> None:
    nc = await nats.connect(url)
    try:
        subject = f"errbus.error.{event.machine}.{event.severity.value}.{event.source}"
        headers = {"Nats-Msg-Id": event.event_id, "Busbridge-Contract": "error_event"}
        await nc.jetstream().publish(subject, encode(event), headers=headers)
    finally:
        await nc.close()


def test_a_resolution_in_one_session_shows_in_another_on_another_console(
    stack: Stack, browser, page
) -> None:
    expect = _expect()
    kind = unique("SharedError")
    stack.send(_d1("SharedAgent", kind, "queue stuck"))
    other_context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        other = open_console(other_context, stack.url_b)  # the second console process
        for p in (page, other):
            p.fill("#q", kind)
            expect(_issue_row(p, kind)).to_have_count(1)
        _issue_row(page, kind).click()
        page.fill("#note", "restarted the consumer")
        page.click("#btn-resolve")
        expect(_issue_row(other, kind)).to_have_count(0)  # pushed to the other session
        other.select_option("#issues-bar select[name=state]", "resolved")
        row = _issue_row(other, kind)
        expect(row).to_have_attribute("data-state", "resolved")
        expect(row).to_contain_text("restarted the consumer")
        row.press("Enter")  # keyboard: open the issue
        expect(other.locator("#history")).to_contain_text("restarted the consumer")
        other.keyboard.press("u")  # reopen from the keyboard
        expect(_issue_row(page, kind)).to_have_count(1)  # back in the first session
    finally:
        other_context.close()


def test_every_view_renders_and_is_keyboard_navigable(stack: Stack, page) -> None:
    expect = _expect()
    stack.send(frames("D3", 9, 1, source="KeysAgent", error_type="KeysError"))
    for key, table in (
        ("2", "#feed"),
        ("3", "#agents"),
        ("4", "h1:has-text('Floods')"),
        ("5", "#dlq"),
        ("6", "#heartbeats"),
        ("7", "#rules"),
        ("1", "#issues"),
    ):
        page.locator("body").press(key)
        expect(page.locator(table)).to_be_visible()
    page.locator("body").press("6")
    expect(page.locator("section.bridge")).to_have_count(1)
    expect(page.locator("section.bridge .phase")).to_contain_text("dual")
    page.locator("body").press("3")
    expect(page.locator("#agents tbody tr[data-key]").first).to_be_visible()
    page.locator("body").press("j")
    focused = page.locator("#agents tbody tr:focus")
    expect(focused).to_have_count(1)
    key = focused.get_attribute("data-key")
    page.evaluate("document.activeElement.dataset.before = '1'")
    stack.send(frames("D3", 2, 1, source="KeysAgent", error_type="KeysError"))
    expect(page.locator("#agents tbody tr[data-before]")).to_have_count(0)  # live re-render
    expect(focused).to_have_attribute("data-key", key)  # the keyboard user keeps their row
    focused.press("Enter")
    expect(page.locator("h1")).to_contain_text("on LoadPC")
