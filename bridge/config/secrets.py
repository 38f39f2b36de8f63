"""Resolve the NATS credentials and TLS settings a config refers to, into nats-py
connect options (DESIGN §8).

Secrets are not config values: the config names a creds file, an nkey seed
file or variable, a password file or variable, a token file or variable, and
the TLS CA / certificate / key files. Plain values (``nats.password``, ...) are
used only when the config opted in with ``allow_plaintext_secrets`` (the
loader refuses them otherwise). Every value resolved here is registered with
``bridge.redaction`` so it is scrubbed from logs.

Every NATS client of the project connects through ``bridge.adapters.nats_connect``, which
uses ``nats_auth_options``, so they all authenticate alike.
Raises ``ConfigError`` naming the key when a file cannot be read, a variable
is unset or TLS material is unusable; files are read when this is called (at
connect), not when the config is loaded.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Any

from bridge.config.model import NatsConfig, NatsTlsConfig
from bridge.errors import ConfigError
from bridge.redaction import register_secret

__all__ = ["nats_auth_options", "tls_context", "tls_enabled"]

log = logging.getLogger(__name__)


def nats_auth_options(c: NatsConfig) -> dict[str, Any]:
    """Keyword options for ``nats.connect``: any of ``user_credentials`` (creds file path),
    ``nkeys_seed`` (seed file path) or ``nkeys_seed_str``, ``user`` + ``password``, ``token``,
    and ``tls`` (an ``ssl.SSLContext``) with ``tls_hostname`` / ``tls_handshake_first``."""
    opts: dict[str, Any] = {}
    if c.creds_file:
        opts["user_credentials"] = _readable(c.creds_file, "nats.creds_file")
    opts.update(_nkey_options(c))
    if c.user:
        opts["user"] = c.user
        opts["password"] = _secret(c.password_file, c.password_env, c.password, "nats.password")
    if c.token_file or c.token_env or c.token:
        opts["token"] = _secret(c.token_file, c.token_env, c.token, "nats.token")
    opts.update(_tls_options(c.tls))
    return opts


def _nkey_options(c: NatsConfig) -> dict[str, Any]:
    if c.nkey_seed_file:
        _check_seed(
            register_secret(_read(c.nkey_seed_file, "nats.nkey_seed_file").strip()),
            "nats.nkey_seed_file",
        )
        return {"nkeys_seed": c.nkey_seed_file}  # nats-py re-reads it to sign each connect nonce
    if c.nkey_seed_env or c.nkey_seed:
        seed = _secret(None, c.nkey_seed_env, c.nkey_seed, "nats.nkey_seed")
        _check_seed(seed, "nats.nkey_seed_env" if c.nkey_seed_env else "nats.nkey_seed")
        return {"nkeys_seed_str": seed}
    return {}


def _check_seed(seed: str, key: str) -> None:
    import nkeys

    try:
        nkeys.from_seed(bytearray(seed.strip().encode())).wipe()
    except Exception as exc:  # noqa: BLE001 (nkeys raises its own errors, binascii.Error, ...)
        raise ConfigError("nats", [f"{key}: not an nkey seed ({type(exc).__name__})"]) from None


def tls_enabled(t: NatsTlsConfig) -> bool:
    """True when the config asks for TLS (``enabled``, or any TLS file set)."""
    return t.enabled or any((t.ca_file, t.cert_file, t.key_file))


def _tls_options(t: NatsTlsConfig) -> dict[str, Any]:
    if not tls_enabled(t):
        return {}
    opts: dict[str, Any] = {"tls": tls_context(t), "tls_handshake_first": t.handshake_first}
    if t.server_hostname:
        opts["tls_hostname"] = t.server_hostname
    return opts


def tls_context(t: NatsTlsConfig) -> ssl.SSLContext:
    """A client ``SSLContext``: server certificate and host name verified against ``ca_file``
    (else the system CAs), client certificate from ``cert_file``/``key_file`` when set."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=t.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "nats", [f"nats.tls.ca_file: cannot load {t.ca_file}: {_why(exc)}"]
        ) from exc
    if t.cert_file:
        try:
            ctx.load_cert_chain(t.cert_file, t.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "nats",
                [f"nats.tls.cert_file: cannot load {t.cert_file} / {t.key_file}: {_why(exc)}"],
            ) from exc
    return ctx


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__


def _secret(file: str | None, env: str | None, plain: str | None, what: str) -> str:
    if file:
        return register_secret(_read(file, f"{what}_file").strip())
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError("nats", [f"{what}_env: environment variable {env} is not set"])
        return register_secret(value)
    if plain:
        log.warning(
            "%s is a plaintext value in the config (allow_plaintext_secrets); prefer %s_file",
            what,
            what,
        )
        return register_secret(plain)
    raise ConfigError("nats", [f"{what}_file: no source for {what}"])


def _read(file: str, key: str) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("nats", [f"{key}: cannot read {file}: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("nats", [f"{key}: {file} is not UTF-8 text"]) from exc


def _readable(file: str, key: str) -> str:
    """``file`` itself once it is known to be readable (nats-py reads it at each connect)."""
    _read(file, key)
    return file
