"""NATS authentication and TLS against real nats-servers configured to require them.

For each method (creds file in operator/JWT mode, nkey seed file and
variable, user + password file, token variable, TLS with a client
certificate, TLS handshake first): the server refuses a client without the
credential, and a bridge configured with it connects, provisions its stream
and stores a ZMQ frame, read back (and by ``busbridge tail``) through the same
``nats_auth_options``.
"""

from __future__ import annotations

import argparse
import io
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import nats
import nats.errors
import pytest
import zmq
from nats.aio.client import Client

from bridge.config.secrets import nats_auth_options
from consumers.tail import add_arguments, run_tail
from contracts.messages import ErrorEvent
from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.nats_security import nkey_pair, operator_setup, tls_material, tls_server_config
from tests.support.nats_server import running_nats_server
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

D1 = (
    b'ERROR:{"message_type": "error_report", "source": "SecureAgent", "timestamp": "2026-11-21T08:02:16.503872", '
    b'"error_data": {"error_id": "00000000-0000-4000-8000-00000000a001", "error_type": "x", "severity": "high"}}'
)


class Case(NamedTuple):
    server_config: str
    nats: dict[str, Any]  # the bridge's nats section (servers added by the test)
    #: options of a client that the server must refuse (lacking the credential)
    refused: dict[str, Any]


def _creds(d: Path, env: pytest.MonkeyPatch) -> Case:
    setup = operator_setup(d / "jwt")
    return Case(setup.server_config, {"creds_file": str(setup.creds_file)}, {})


def _nkey_file(d: Path, env: pytest.MonkeyPatch) -> Case:
    seed, public, _ = nkey_pair()
    (d / "bridge.nk").write_text(seed + "\n")
    return Case(
        f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n',
        {"nkey_seed_file": str(d / "bridge.nk")},
        {},
    )


def _nkey_env(d: Path, env: pytest.MonkeyPatch) -> Case:
    seed, public, _ = nkey_pair()
    other_seed, _, _ = nkey_pair()  # a valid seed of a user the server does not know
    env.setenv("BB_TEST_NKEY_SEED", seed)
    return Case(
        f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n',
        {"nkey_seed_env": "BB_TEST_NKEY_SEED"},
        {"nkeys_seed_str": other_seed},
    )


def _password_file(d: Path, env: pytest.MonkeyPatch) -> Case:
    password = secrets.token_urlsafe(16)
    (d / "nats.pw").write_text(password + "\n")
    return Case(
        f'authorization {{ user: bridge, password: "{password}" }}\n',
        {"user": "bridge", "password_file": str(d / "nats.pw")},
        {"user": "bridge", "password": "wrong-password"},
    )


def _token_env(d: Path, env: pytest.MonkeyPatch) -> Case:
    token = secrets.token_urlsafe(24)
    env.setenv("BB_TEST_TOKEN", token)
    return Case(
        f'authorization {{ token: "{token}" }}\n',
        {"token_env": "BB_TEST_TOKEN"},
        {"token": "not-the-token"},
    )


def _tls_client_cert(d: Path, env: pytest.MonkeyPatch) -> Case:
    files = tls_material(d / "tls")
    import ssl

    no_cert = ssl.create_default_context(
        cafile=str(files.ca)
    )  # trusts the server, shows no certificate
    tls = {
        "ca_file": str(files.ca),
        "cert_file": str(files.client_cert),
        "key_file": str(files.client_key),
    }
    return Case(tls_server_config(files), {"tls": tls}, {"tls": no_cert})


def _tls_handshake_first(d: Path, env: pytest.MonkeyPatch) -> Case:
    files = tls_material(d / "tls")
    tls = {
        "ca_file": str(files.ca),
        "cert_file": str(files.client_cert),
        "key_file": str(files.client_key),
    }
    import ssl

    ctx = ssl.create_default_context(cafile=str(files.ca))
    ctx.load_cert_chain(str(files.client_cert), str(files.client_key))
    # a client with the right certificate that waits for INFO first: the server never sends it
    return Case(
        tls_server_config(files, handshake_first=True),
        {"tls": {**tls, "handshake_first": True}},
        {"tls": ctx},
    )


CASES: dict[str, Callable[[Path, pytest.MonkeyPatch], Case]] = {
    "creds_file": _creds,
    "nkey_seed_file": _nkey_file,
    "nkey_seed_env": _nkey_env,
    "user_password_file": _password_file,
    "token_env": _token_env,
    "tls_client_cert": _tls_client_cert,
    "tls_handshake_first": _tls_handshake_first,
}


async def _refused(url: str, options: dict[str, Any]) -> BaseException | None:
    """The error a one-shot connect with ``options`` gets, or None when it was let in."""
    nc = Client()  # made first so that a refused connection is closed too (nats.connect leaks it)
    try:
        with anyio.fail_after(10):
            await nc.connect(
                url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options
            )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        return exc
    finally:
        await nc.close()
    return None


@pytest.mark.parametrize("method", list(CASES))
async def test_bridge_authenticates_with(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[method](tmp_path, monkeypatch)
    with running_nats_server(tmp_path / "nats", extra_config=case.server_config) as server:
        assert await _refused(server.url, case.refused) is not None, (
            "the server must require the credential"
        )
        cfg = make_config(server.url, tmp_path, nats=case.nats)
        auth = nats_auth_options(cfg.nats)
        assert await _refused(server.url, auth) is None
        async with running_bridge(cfg) as bridge:
            await anyio.to_thread.run_sync(_send, bridge.zmq_endpoints[0], D1)
            assert await wait_for_count(server.url, "ERRBUS", 1, **auth) == 1
        [stored] = await fetch_all(server.url, "ERRBUS", **nats_auth_options(cfg.nats))
        assert isinstance(stored.msg, ErrorEvent) and stored.msg.source == "SecureAgent"
        out = io.StringIO()
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        with anyio.fail_after(10):
            assert await run_tail(cfg, parser.parse_args([]), out=out) == 0
        assert "SecureAgent" in out.getvalue()


def _send(endpoint: str, frame: bytes) -> None:
    with zmq.Context() as ctx:
        [sock] = connect_publishers(ctx, endpoint, 1)
        sock.send(frame)
        sock.close(linger=10_000)
