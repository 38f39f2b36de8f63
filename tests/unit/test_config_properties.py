"""Property test: any YAML document yields a valid config or a ConfigError, never another exception."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config.load import parse_config
from bridge.config.model import BridgeConfig
from bridge.errors import ConfigError

SECTIONS = [
    "zmq",
    "nats",
    "stream",
    "publish",
    "spool",
    "dedup",
    "flood",
    "identity",
    "legacy",
    "admin",
]
KEYS = [
    "mode",
    "bind_endpoint",
    "rcvhwm",
    "servers",
    "user",
    "name",
    "storage",
    "max_bytes",
    "rules",
    "threshold",
    "match",
    "window_secs",
    "port",
    "enabled",
    "local_timezone",
    "embedded",
    "subject_prefix",
    "bogus",
    # security: plain secrets (refused unless opted out), their file/env references, TLS, CURVE
    "password",
    "token",
    "nkey_seed",
    "password_file",
    "token_env",
    "nkey_seed_file",
    "creds_file",
    "tls",
    "ca_file",
    "cert_file",
    "key_file",
    "handshake_first",
    "curve",
    "server_secret_key_file",
    "allowed_client_keys",
    "allowed_clients_dir",
    "max_frame_bytes",
    "hard_max_frame_bytes",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
documents = st.dictionaries(
    st.sampled_from([*SECTIONS, "machine", "log_level", "unknown", "allow_plaintext_secrets"]),
    values,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_is_a_config_or_a_config_error(doc: dict) -> None:
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    try:
        parsed: object = parse_config(text, "<fuzz>")
    except ConfigError as exc:
        parsed = exc
    if isinstance(parsed, ConfigError):
        assert parsed.problems and all(":" in p for p in parsed.problems)
    else:
        assert isinstance(parsed, BridgeConfig)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, "<fuzz>")
    except ConfigError:
        pass
