"""NATS secrets come from files or the environment (plain values only when opted in), TLS
material is loaded into an SSLContext, and anything missing or unusable names its key."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bridge.config.load import parse_config
from bridge.config.secrets import nats_auth_options
from bridge.errors import ConfigError
from bridge.redaction import scrub
from tests.support.nats_security import nkey_pair, tls_material


def _nats(text: str):
    return parse_config(text).nats


def test_password_from_file_and_token_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret-pw\n")
    monkeypatch.setenv("BB_TOKEN", "tok-from-env")
    opts = nats_auth_options(
        _nats(f"nats: {{user: bridge, password_file: {tmp_path / 'pw'}, token_env: BB_TOKEN}}")
    )
    assert opts == {"user": "bridge", "password": "s3cret-pw", "token": "tok-from-env"}
    assert (
        scrub("pw=s3cret-pw tok=tok-from-env") == "pw=*** tok=***"
    )  # registered for log redaction


def test_creds_file_is_passed_by_path_once_readable(tmp_path: Path) -> None:
    creds = tmp_path / "b.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n...\n")
    assert nats_auth_options(_nats(f"nats: {{creds_file: {creds}}}")) == {
        "user_credentials": str(creds)
    }
    with pytest.raises(ConfigError, match=r"nats\.creds_file: cannot read"):
        nats_auth_options(_nats(f"nats: {{creds_file: {tmp_path / 'missing.creds'}}}"))


def test_nkey_seed_from_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed, _, _ = nkey_pair()
    (tmp_path / "seed").write_text(seed + "\n")
    assert nats_auth_options(_nats(f"nats: {{nkey_seed_file: {tmp_path / 'seed'}}}")) == {
        "nkeys_seed": str(tmp_path / "seed")
    }
    monkeypatch.setenv("BB_SEED", seed)
    assert nats_auth_options(_nats("nats: {nkey_seed_env: BB_SEED}")) == {"nkeys_seed_str": seed}
    assert seed not in scrub(f"seed {seed}")


def test_a_bad_nkey_seed_names_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "seed").write_text("SUNOTASEED\n")
    with pytest.raises(ConfigError, match=r"nats\.nkey_seed_file: not an nkey seed") as info:
        nats_auth_options(_nats(f"nats: {{nkey_seed_file: {tmp_path / 'seed'}}}"))
    assert "SUNOTASEED" not in str(info.value)
    monkeypatch.delenv("BB_NO_SEED", raising=False)
    with pytest.raises(
        ConfigError, match=r"nats\.nkey_seed_env: environment variable BB_NO_SEED is not set"
    ):
        nats_auth_options(_nats("nats: {nkey_seed_env: BB_NO_SEED}"))


def test_missing_secret_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BB_NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"nats\.password_env"):
        nats_auth_options(_nats("nats: {user: u, password_env: BB_NOPE}"))
    with pytest.raises(ConfigError, match=r"nats\.token_file"):
        nats_auth_options(_nats(f"nats: {{token_file: {tmp_path / 'missing'}}}"))


def test_plain_values_are_used_only_when_opted_in() -> None:
    cfg = parse_config(
        "allow_plaintext_secrets: true\nnats: {user: u, password: plain-pw-1, token: plain-tok-1}\n"
    )
    assert nats_auth_options(cfg.nats) == {
        "user": "u",
        "password": "plain-pw-1",
        "token": "plain-tok-1",
    }


def test_tls_context_with_client_certificate(tmp_path: Path) -> None:
    files = tls_material(tmp_path)
    text = (
        f"nats: {{tls: {{ca_file: {files.ca}, cert_file: {files.client_cert}, key_file: {files.client_key}, "
        "server_hostname: nats.internal, handshake_first: true}}"
    )
    opts = nats_auth_options(_nats(text))
    assert isinstance(opts["tls"], ssl.SSLContext) and opts["tls"].verify_mode is ssl.CERT_REQUIRED
    assert (
        opts["tls"].check_hostname
        and opts["tls_hostname"] == "nats.internal"
        and opts["tls_handshake_first"] is True
    )
    assert nats_auth_options(_nats("nats: {tls: {enabled: true}}"))["tls_handshake_first"] is False


def test_unusable_tls_files_name_their_key(tmp_path: Path) -> None:
    files = tls_material(tmp_path)
    with pytest.raises(ConfigError, match=r"nats\.tls\.ca_file: cannot load"):
        nats_auth_options(_nats(f"nats: {{tls: {{ca_file: {tmp_path / 'nope.pem'}}}}}"))
    with pytest.raises(ConfigError, match=r"nats\.tls\.cert_file: cannot load"):
        nats_auth_options(
            _nats(
                f"nats: {{tls: {{ca_file: {files.ca}, cert_file: {files.ca}, key_file: {files.ca}}}}}"
            )
        )


def test_no_secrets_no_options() -> None:
    assert nats_auth_options(_nats("{}")) == {}
