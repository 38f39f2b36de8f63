"""Message masking and the flood-control fingerprint (DESIGN §3)."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pipeline.fingerprint import MAX_MASK_CHARS, fingerprint, mask_message

# The plain, readable definition of the masking rules. The module compiles a
# faster equivalent; the property test below checks they agree.
_REF_PATH = (
    r"(?<![\w:./~-])(?:~|\.{1,2})?(?:/[^\s/'\"`()\[\]{}<>,;:|*?]+){2,}/?"
    r"|(?<![A-Za-z0-9])[A-Za-z]:\\[^\s'\"`<>|*?]*"
)
_REF_UUID = r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9A-Za-z])"
_REF_HEX = (
    r"(?<![0-9A-Za-z])(?:0[xX][0-9a-fA-F]+|(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,})(?![0-9A-Za-z])"
)
_REF_IP = r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]{1,5})?(?!\.?[0-9])"
_REF_NUMBER = r"(?<![A-Za-z0-9.])[0-9]+(?:\.[0-9]+)?"
_REFERENCE = re.compile(
    f"(?P<path>{_REF_PATH})|(?P<uuid>{_REF_UUID})|(?P<hex>{_REF_HEX})|(?P<ip>{_REF_IP})|(?P<n>{_REF_NUMBER})"
)


def reference_mask(text: str) -> str:
    return _REFERENCE.sub(lambda m: f"<{m.lastgroup}>", text)


@pytest.mark.parametrize(
    ("message", "masked"),
    [
        ("Resource temporarily unavailable (#12)", "Resource temporarily unavailable (#<n>)"),
        ("took 1.5s, 23.99 GiB, attempt=5, -3", "took <n>s, <n> GiB, attempt=<n>, -<n>"),
        ("id fb685d84-d253-40a5-bf94-f8fd71b35dfe done", "id <uuid> done"),
        ("FB685D84-D253-40A5-BF94-F8FD71B35DFE", "<uuid>"),
        ("object at 0x7f3a2b1c", "object at <hex>"),
        ("sha 9f86d081884c7d65 and deadbeef", "sha <hex> and <hex>"),
        ("12345678 is a number", "<n> is a number"),
        ("open /data/x/clip_1.wav failed", "open <path> failed"),
        ('File "/usr/lib/python3.11/x.py", line 12', 'File "<path>", line <n>'),
        ("./rel/path and ~/home/x and ../up/dir", "<path> and <path> and <path>"),
        ("open C:\\Users\\x\\a.txt failed", "open <path> failed"),
        ("endpoint tcp://192.168.100.17:7140 down", "endpoint tcp://<ip> down"),
        ("host 10.0.0.1.", "host <ip>."),
        ("addr='tcp://*:7220'", "addr='tcp://*:<n>'"),
        ("level59 pc2 task_17 5000ms", "level59 pc2 task_<n> <n>ms"),
        ("and/or a/b", "and/or a/b"),
        ("no variable parts", "no variable parts"),
        ("", ""),
    ],
)
def test_masking(message: str, masked: str) -> None:
    assert mask_message(message) == masked


def test_only_the_first_chars_are_masked() -> None:
    message = "x" * (MAX_MASK_CHARS - 2) + " 12345 tail 678"
    assert (
        mask_message(message) == "x" * (MAX_MASK_CHARS - 2) + " <n>2345 tail 678"
    )  # cut after "1"


def test_same_error_different_numbers_and_ids_share_a_fingerprint() -> None:
    a = fingerprint(
        "S",
        "timeout",
        "request 17 to 192.168.1.2:80 (id 3f2a0c1e-1111-4222-8333-944445555666) after 5.5s",
    )
    b = fingerprint(
        "S",
        "timeout",
        "request 942 to 10.0.0.9:8080 (id 00000000-aaaa-4bbb-8ccc-dddddddddddd) after 30s",
    )
    assert a == b
    assert re.fullmatch("[0-9a-f]{16}", a)


def test_source_error_type_and_text_matter() -> None:
    base = fingerprint("A", "t", "failed (#1)")
    assert fingerprint("B", "t", "failed (#1)") != base
    assert fingerprint("A", "u", "failed (#1)") != base
    assert fingerprint("A", "t", "crashed (#1)") != base
    assert fingerprint("At", "", "failed (#1)") != fingerprint(
        "A", "t", "failed (#1)"
    )  # parts stay apart


def test_long_and_odd_inputs() -> None:
    long_message = "y" * 100_000
    assert fingerprint("A", "t", long_message) == fingerprint("A", "t", long_message)
    assert fingerprint("A", "t", "bad \udcff") != fingerprint(
        "A", "t", "bad \udcfe"
    )  # lone surrogates hash


def test_memo_does_not_change_results() -> None:
    messages = [f"failed {n} \u00e9" for n in range(10_000)]
    first = [fingerprint("S", "t", m) for m in messages]
    assert [fingerprint("S", "t", m) for m in messages] == first
    assert len(set(first)) == 1


_TEXT = st.text(alphabet="0123456789abcdefABCDEFxX.:-/\\~_ #Zg\"'é", max_size=60)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_fast_mask_equals_reference(text: str) -> None:
    assert mask_message(text) == reference_mask(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_fast_mask_equals_reference_on_any_text(text: str) -> None:
    assert mask_message(text) == reference_mask(text)


@settings(max_examples=400, deadline=None)
@given(_TEXT, st.randoms(use_true_random=False))
def test_texts_of_one_shape_mask_like_the_reference(text: str, rnd: random.Random) -> None:
    """The memo by shape (ASCII digits as "1"): a text that differs from another only in its
    digits reuses the other's spans, and still masks as the reference does."""
    variant = "".join(rnd.choice("0123456789") if c in "0123456789" else c for c in text)
    assert mask_message(text) == reference_mask(text)
    assert mask_message(variant) == reference_mask(variant)


def test_which_digit_comes_before_x_still_decides() -> None:
    for first, second in (("0x1f", "5x1f"), ("5x1f", "0x1f"), ("a 0X9 b", "a 7X9 b")):
        assert mask_message(first) == reference_mask(first)
        assert mask_message(second) == reference_mask(second)
    assert mask_message("at 0x7f3a2b1c") == "at <hex>"
    assert mask_message("at 5x7f3a2b1c") == "at <n>x7f3a2b1c"
