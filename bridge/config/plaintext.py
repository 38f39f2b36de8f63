"""Plain secret values in a config: refused when loading, redacted when shown (DESIGN §8).

One rule decides what is a secret, for both uses:

* a **key** one of whose words (snake_case or camelCase) says secret
  (``password``, ``passwd``, ``passphrase``, ``pass``, ``pwd``, ``token``,
  ``secret``, ``seed``, ``credential(s)``, ``private key``, ``api key``),
  unless its last word names where the secret lives or a quantity (``file``,
  ``env``, ``dir``, ``path``, ``secs``, ``bytes``), with a scalar value other
  than "" (null, booleans, lists and mappings are not secret values):
  ``nats.password: hunter2`` is one, ``nats.password_file`` is not, nor is
  ``health.service_methods: {TokenizerAgent: [http]}``;
* a **URL with credentials** (``nats://user:pass@host``, ``nats://TOKEN@host``)
  as any string value.

``plain_secret_problems(doc)`` runs on the raw YAML document before the strict
type check and returns one ``path: message`` per plain secret, naming the key
to use instead (``nats.password_file`` or ``nats.password_env``), unless the
document sets ``allow_plaintext_secrets: true`` at top level.
``redacted(cfg)`` is the config as builtins with every secret value replaced by
``"<redacted>"`` and URL credentials by ``***``: paths and variable names stay
visible, values never do.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import msgspec

__all__ = [
    "OPT_OUT_KEY",
    "REDACTED",
    "is_secret_key",
    "plain_secret_problems",
    "redact_url",
    "redacted",
]

OPT_OUT_KEY = "allow_plaintext_secrets"
REDACTED = "<redacted>"

_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "pass",
        "pwd",
        "token",
        "tokens",
        "secret",
        "secrets",
        "seed",
        "seeds",
        "credential",
        "credentials",
        "privatekey",
        "apikey",
    }
)
_SECRET_PAIRS = frozenset({("private", "key"), ("api", "key")})
_NOT_A_VALUE = frozenset({"file", "env", "dir", "path", "secs", "bytes"})
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
#: where each plain field of the config tree can be read from instead
_INSTEAD = {
    "nats.password": "nats.password_file or nats.password_env",
    "nats.token": "nats.token_file or nats.token_env",
    "nats.nkey_seed": "nats.nkey_seed_file or nats.nkey_seed_env",
}
_URL_INSTEAD = "nats.user with nats.password_file/_env, or nats.token_file/_env"


def is_secret_key(key: str) -> bool:
    """True when ``key`` names a secret value (not a file, variable, directory or quantity)."""
    words = [w.lower() for w in _WORDS.findall(key)]
    if key == OPT_OUT_KEY or not words or words[-1] in _NOT_A_VALUE:
        return False
    return any(w in _SECRET_WORDS for w in words) or any(
        pair in _SECRET_PAIRS for pair in itertools.pairwise(words)
    )


def _is_secret_value(value: Any) -> bool:
    """Scalars are secret values; null, booleans, lists and mappings are not."""
    return isinstance(value, str | int | float) and not isinstance(value, bool) and value != ""


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def plain_secret_problems(doc: Any) -> list[str]:
    """Every plain secret in the raw document ``doc`` as ``path: message``; [] when opted out."""
    if not isinstance(doc, dict) or doc.get(OPT_OUT_KEY) is True:
        return []
    return [_problem(path, kind) for path, kind in _walk(doc, "")]


def _problem(path: str, kind: str) -> str:
    hint = f"set {OPT_OUT_KEY}: true to accept it anyway"
    if kind == "url":
        return f"{path}: credentials in a URL are a plaintext secret; use {_URL_INSTEAD} ({hint})"
    instead = _INSTEAD.get(path, "a *_file or *_env key naming where the secret is kept")
    return f"{path}: plaintext secret refused; use {instead} ({hint})"


def _walk(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        found: list[tuple[str, str]] = []
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if is_secret_key(str(key)) and _is_secret_value(item):
                found.append((sub, "key"))
            else:
                found += _walk(item, sub)
        return found
    if isinstance(value, list):
        return [hit for i, item in enumerate(value) for hit in _walk(item, f"{path}[{i}]")]
    if isinstance(value, str) and _URL_CREDENTIALS.search(value):
        return [(path, "url")]
    return []


def redacted(cfg: msgspec.Struct) -> dict[str, Any]:
    """``cfg`` as builtins (JSON-ready) with secret values and URL credentials redacted."""
    return _redact(msgspec.to_builtins(cfg))  # type: ignore[no-any-return]


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if is_secret_key(str(k)) and _is_secret_value(v) else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return redact_url(value) if isinstance(value, str) else value
