"""Log redaction: registered secrets and URL credentials never reach a handler's output,
in the message, its arguments or a traceback."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bridge.redaction import SecretFilter, install_log_redaction, register_secret, scrub

SECRET = register_secret("tok-5e6f7a8b9c")


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.Logger("redaction-test")  # noqa: LOG001 (not registered globally: nothing else sees it)
    logger.addHandler(handler)
    install_log_redaction(logger)
    install_log_redaction(logger)  # idempotent
    assert sum(isinstance(f, SecretFilter) for f in handler.filters) == 1
    yield logger, out
    handler.close()


def test_arguments_and_urls_are_scrubbed(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.warning(
        "connecting with token %s to %s", SECRET, "nats://bridge:pw-in-url@10.0.0.5:4222"
    )
    assert out.getvalue() == "WARNING connecting with token *** to nats://***@10.0.0.5:4222\n"


def test_tracebacks_are_scrubbed(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    try:
        raise RuntimeError(f"refused: {SECRET}")
    except RuntimeError:
        logger.exception("connect failed")
    text = out.getvalue()
    assert "RuntimeError: refused: ***" in text and SECRET not in text


def test_short_values_are_not_registered() -> None:
    register_secret("ab")
    assert scrub("ab abc") == "ab abc"
