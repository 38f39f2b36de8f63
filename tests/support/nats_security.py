"""Security material for tests, built from libraries only (no nsc, no openssl CLI):

* ``operator_setup(dir)``: a NATS operator, system account, JetStream-enabled
  account and a user, as signed JWTs (the nats-io/jwt v2 format: header
  ``{"typ":"JWT","alg":"ed25519-nkey"}``, ``jti`` = base32 of SHA-512/256 of
  the claims, ed25519 signature by the issuer's nkey) plus the user's
  ``.creds`` file and the server config text (memory resolver, preloaded).
* ``nkey_user()``: a user nkey seed and its public key (``U...``).
* ``tls_material(dir)``: a CA, a server certificate for 127.0.0.1/localhost
  and a client certificate signed by it, as PEM files (``cryptography``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "OperatorSetup",
    "TlsFiles",
    "nkey_pair",
    "operator_setup",
    "tls_material",
    "tls_server_config",
]


def nkey_pair(prefix: int = nkeys.PREFIX_BYTE_USER) -> tuple[str, str, nkeys.KeyPair]:
    """``(seed, public_key, keypair)`` of a fresh nkey of the given kind (default: user)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    kp = nkeys.from_seed(bytearray(seed))
    return seed.decode(), kp.public_key.decode(), kp


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict) -> str:
    claims = {
        "jti": "",
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": nats,
    }
    digest = hashlib.new("sha512_256", json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


class OperatorSetup(NamedTuple):
    creds_file: Path
    user_seed: str
    server_config: str


def operator_setup(folder: Path) -> OperatorSetup:
    """Operator-mode auth with one JetStream account and one user; writes ``<folder>/user.creds``."""
    _, op_pub, op = nkey_pair(nkeys.PREFIX_BYTE_OPERATOR)
    _, sys_pub, _ = nkey_pair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, acc_pub, acc = nkey_pair(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user_pub, _ = nkey_pair()
    limits = {
        "subs": -1,
        "data": -1,
        "payload": -1,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
    }
    js_limits = {**limits, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    operator = _jwt(op, op_pub, "OP", {"type": "operator", "version": 2, "system_account": sys_pub})
    system = _jwt(op, sys_pub, "SYS", {"limits": limits, "type": "account", "version": 2})
    account = _jwt(op, acc_pub, "APP", {"limits": js_limits, "type": "account", "version": 2})
    user = _jwt(
        acc,
        user_pub,
        "bridge",
        {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2},
    )
    creds = folder / "user.creds"
    folder.mkdir(parents=True, exist_ok=True)
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
    )
    config = (
        f'operator: "{operator}"\nsystem_account: {sys_pub}\nresolver: MEMORY\n'
        f'resolver_preload: {{\n  {sys_pub}: "{system}"\n  {acc_pub}: "{account}"\n}}\n'
    )
    return OperatorSetup(creds, user_seed, config)


class TlsFiles(NamedTuple):
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def tls_material(folder: Path) -> TlsFiles:
    """A CA and server/client certificates it signed (EC P-256, valid for a day), as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "busbridge test CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        *(
            folder / n
            for n in ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem")
        )
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _leaf(
        ca,
        ca_key,
        "nats-test-server",
        ExtendedKeyUsageOID.SERVER_AUTH,
        files.server_cert,
        files.server_key,
    )
    _leaf(
        ca,
        ca_key,
        "busbridge-client",
        ExtendedKeyUsageOID.CLIENT_AUTH,
        files.client_cert,
        files.client_key,
    )
    return files


def tls_server_config(
    files: TlsFiles, *, verify_clients: bool = True, handshake_first: bool = False
) -> str:
    """The nats-server ``tls {}`` block for ``files`` (client certificates required by default)."""
    return (
        f'tls {{\n  cert_file: "{files.server_cert}"\n  key_file: "{files.server_key}"\n  ca_file: "{files.ca}"\n'
        f"  verify: {str(verify_clients).lower()}\n  handshake_first: {str(handshake_first).lower()}\n  timeout: 5\n}}\n"
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cn: str,
    usage: x509.ObjectIdentifier,
    cert: Path,
    key: Path,
) -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
        x509.DNSName(cn),
    ]
    built = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), ca.subject, leaf_key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
