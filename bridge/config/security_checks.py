"""Cross-field rules of the security settings (DESIGN §8), each problem as ``path: message``.

NATS: each secret has at most one source (file, variable, plain opt-out
value); a user needs a password source; ``tls.key_file`` needs ``cert_file``;
``tls.handshake_first`` needs TLS on. ZMQ: the hard frame cap is not below the
dead-letter cap; CURVE needs bind mode, a server secret key file and an
allowlist (a directory or keys).
"""

from __future__ import annotations

from bridge.config.model import BridgeConfig, NatsConfig, ZmqConfig, ZmqMode

__all__ = ["security_problems"]


def security_problems(cfg: BridgeConfig) -> list[str]:
    """Every violated rule of ``nats`` auth/TLS and of ``zmq`` frame caps and CURVE."""
    return _nats_secrets(cfg.nats) + _nats_tls(cfg.nats) + _zmq_caps(cfg.zmq) + _zmq_curve(cfg.zmq)


def _nats_secrets(n: NatsConfig) -> list[str]:
    problems = []
    for name, sources in (
        ("password", (n.password_file, n.password_env, n.password)),
        ("token", (n.token_file, n.token_env, n.token)),
        ("nkey_seed", (n.nkey_seed_file, n.nkey_seed_env, n.nkey_seed)),
    ):
        if sum(s is not None for s in sources) > 1:
            problems.append(
                f"nats.{name}_file: set one of {name}_file, {name}_env (or {name}), not several"
            )
    has_password = any(s is not None for s in (n.password_file, n.password_env, n.password))
    if has_password and not n.user:
        problems.append("nats.user: required with password_file/password_env")
    if n.user and not has_password:
        problems.append(
            "nats.user: needs password_file or password_env (passwords never go in YAML)"
        )
    return problems


def _nats_tls(n: NatsConfig) -> list[str]:
    t, problems = n.tls, []
    if t.key_file and not t.cert_file:
        problems.append("nats.tls.key_file: needs nats.tls.cert_file")
    if t.handshake_first and not (t.enabled or t.ca_file or t.cert_file):
        problems.append("nats.tls.handshake_first: needs TLS on (nats.tls.enabled or a TLS file)")
    return problems


def _zmq_caps(z: ZmqConfig) -> list[str]:
    if 0 <= z.hard_max_frame_bytes < z.max_frame_bytes or (
        z.max_frame_bytes < 0 <= z.hard_max_frame_bytes
    ):
        return [
            "zmq.hard_max_frame_bytes: must be -1 or >= zmq.max_frame_bytes "
            "(else frames the bridge would dead-letter disconnect their publisher instead)"
        ]
    return []


def _zmq_curve(z: ZmqConfig) -> list[str]:
    c, problems = z.curve, []
    if not c.enabled:
        return problems
    if z.mode is not ZmqMode.BIND:
        problems.append(
            "zmq.curve.enabled: CURVE is supported in bind mode only (the bridge is the CURVE server)"
        )
    if not c.server_secret_key_file:
        problems.append("zmq.curve.server_secret_key_file: required when zmq.curve.enabled")
    if not c.allowed_clients_dir and not c.allowed_client_keys:
        problems.append(
            "zmq.curve.allowed_clients_dir: an allowlist is required (allowed_clients_dir or allowed_client_keys)"
        )
    return problems
