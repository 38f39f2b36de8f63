"""Keep resolved secrets out of every log line and error message (DESIGN §8).

The first defence is that secrets are never formatted into messages (URLs are
logged through ``redact_url``). This module is the second: ``register_secret``
records every value resolved from a secret file, environment variable or
plain opt-out value (``bridge.config.secrets`` calls it), and ``scrub(text)``
replaces each registered value and the credentials of any URL with ``***``.

``SecretFilter`` applies ``scrub`` to a log record's final message and to its
formatted traceback; ``install_log_redaction()`` adds one to every handler of
the root logger (the CLI does this right after configuring logging). Values
shorter than ``MIN_SECRET_CHARS`` are not registered: scrubbing them would
mangle ordinary text, and they are not secrets worth the name.
"""

from __future__ import annotations

import logging
import threading

from bridge.config.plaintext import redact_url

__all__ = ["MIN_SECRET_CHARS", "SecretFilter", "install_log_redaction", "register_secret", "scrub"]

MIN_SECRET_CHARS = 4
_MASK = "***"
_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole


def register_secret(value: str) -> str:
    """Remember ``value`` as a secret to scrub from logs; returns it unchanged."""
    global _secrets
    if len(value) >= MIN_SECRET_CHARS and value not in _secrets:
        with _lock:
            _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))
    return value


def scrub(text: str) -> str:
    """``text`` with registered secrets and URL credentials replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return redact_url(text)


class SecretFilter(logging.Filter):
    """Rewrites each record's message (and traceback text) through ``scrub``; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a ``SecretFilter`` to every handler of ``logger`` (default: root). Idempotent."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
