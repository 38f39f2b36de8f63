"""CURVE pieces without a bridge: the handshake warning policy (manual clock), key files
from ``busbridge keys generate``, unusable key files named by key, and the config rules."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth

from bridge.adapters.zmq_curve import CurveServer, HandshakeWatch, generate_keypair
from bridge.cli import main
from bridge.config.load import parse_config
from bridge.config.model import ZmqCurveConfig
from bridge.errors import BridgeError, ConfigError
from tests.support.fakes import FakeClock


def test_warns_each_quiet_period_until_a_handshake_succeeds() -> None:
    clock = FakeClock()
    watch = HandshakeWatch(60.0, clock)
    clock.advance(59)
    assert watch.due() is None
    watch.observe("handshake_failed_auth")
    clock.advance(1)
    assert "(1 handshakes failed)" in (watch.due() or "")
    clock.advance(60)
    assert "(0 handshakes failed)" in (watch.due() or "")  # still nobody got in
    watch.observe("handshake_succeeded")
    clock.advance(60)
    assert watch.due() is None


def test_after_a_success_only_failures_without_success_warn() -> None:
    clock = FakeClock()
    watch = HandshakeWatch(10.0, clock)
    watch.observe("handshake_succeeded")
    clock.advance(10)
    assert watch.due() is None
    clock.advance(10)
    assert watch.due() is None  # connected and idle publishers: no handshakes, nothing wrong
    watch.observe("handshake_failed_protocol")
    clock.advance(10)
    assert "(1 handshakes failed)" in (watch.due() or "")
    watch.observe("handshake_failed_no_detail")
    watch.observe("handshake_succeeded")
    clock.advance(10)
    assert watch.due() is None


def test_generated_keys_are_zmq_certificates(tmp_path: Path) -> None:
    public, secret, z85 = generate_keypair(tmp_path / "k", "pub1")
    assert zmq.auth.load_certificate(public) == (z85.encode(), None)
    pub, sec = zmq.auth.load_certificate(secret)
    assert pub == z85.encode() and sec is not None and zmq.curve_public(sec) == pub
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    with pytest.raises(BridgeError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "k", "pub1")
    assert generate_keypair(tmp_path / "k", "pub1", force=True)[2] != z85


def test_keys_generate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--dir", str(tmp_path), "--name", "bridge"]) == 0
    out = capsys.readouterr().out
    public, secret = zmq.auth.load_certificate(tmp_path / "bridge.key_secret")
    assert public.decode() in out and secret is not None and secret.decode() not in out
    assert main(["keys", "generate", "--dir", str(tmp_path), "--name", "bridge"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_unusable_key_files_are_named(tmp_path: Path) -> None:
    public, _, _ = generate_keypair(tmp_path, "srv")
    ctx = zmq.Context()
    try:
        with pytest.raises(ConfigError, match=r"server_secret_key_file: .* has no secret-key"):
            CurveServer(
                ctx,
                ZmqCurveConfig(
                    enabled=True,
                    server_secret_key_file=str(public),
                    allowed_clients_dir=str(tmp_path),
                ),
            )
        secret = tmp_path / "srv.key_secret"
        with pytest.raises(ConfigError, match=r"allowed_clients_dir: cannot read"):
            CurveServer(
                ctx,
                ZmqCurveConfig(
                    enabled=True,
                    server_secret_key_file=str(secret),
                    allowed_clients_dir=str(tmp_path / "no"),
                ),
            )
        server = CurveServer(
            ctx,
            ZmqCurveConfig(
                enabled=True, server_secret_key_file=str(secret), allowed_clients_dir=str(tmp_path)
            ),
        )
        assert server.allowed == {
            zmq.auth.load_certificate(public)[0]
        }  # every *.key of the directory
    finally:
        ctx.term()


def test_curve_and_frame_cap_rules() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "zmq: {mode: connect, connect_endpoints: ['tcp://h:1'], max_frame_bytes: 1000, hard_max_frame_bytes: 999,"
            " curve: {enabled: true, allowed_client_keys: ['short']}}\n"
            "nats: {tls: {key_file: k.pem, handshake_first: true}, token_env: T, token_file: t}\n"
        )
    assert sorted(p.split(":")[0] for p in info.value.problems) == ["zmq.curve.allowed_client_keys"]
    with pytest.raises(ConfigError) as info:
        parse_config(
            "zmq: {mode: connect, connect_endpoints: ['tcp://h:1'], max_frame_bytes: 1000, hard_max_frame_bytes: 999,"
            " curve: {enabled: true}}\n"
            "nats: {tls: {key_file: k.pem, handshake_first: true}, token_env: T, token_file: t}\n"
        )
    assert sorted(p.split(":")[0] for p in info.value.problems) == sorted(
        [
            "zmq.hard_max_frame_bytes",
            "zmq.curve.enabled",
            "zmq.curve.server_secret_key_file",
            "zmq.curve.allowed_clients_dir",
            "nats.tls.key_file",
            "nats.tls.handshake_first",
            "nats.token_file",
        ]
    )
    ok = parse_config("zmq: {max_frame_bytes: -1, hard_max_frame_bytes: -1}\n")
    assert ok.zmq.max_frame_bytes == ok.zmq.hard_max_frame_bytes == -1
