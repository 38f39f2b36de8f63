"""NATS secrets come from files or the environment, and a missing one names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.load import parse_config
from bridge.config.secrets import nats_auth_options
from bridge.errors import ConfigError


def _nats(text: str):
    return parse_config(text).nats


def test_password_from_file_and_token_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.setenv("BB_TOKEN", "tok")
    opts = nats_auth_options(_nats(f"nats: {{user: bridge, password_file: {tmp_path / 'pw'}, token_env: BB_TOKEN}}"))
    assert opts == {"user": "bridge", "password": "s3cret", "token": "tok"}


def test_creds_file_is_passed_by_path() -> None:
    assert nats_auth_options(_nats("nats: {creds_file: /etc/b.creds}")) == {"user_credentials": "/etc/b.creds"}


def test_missing_secret_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BB_NOPE", raising=False)
    with pytest.raises(ConfigError, match="nats.password_env"):
        nats_auth_options(_nats("nats: {user: u, password_env: BB_NOPE}"))
    with pytest.raises(ConfigError, match="nats.token_file"):
        nats_auth_options(_nats(f"nats: {{token_file: {tmp_path / 'missing'}}}"))


def test_no_secrets_no_options() -> None:
    assert nats_auth_options(_nats("{}")) == {}
