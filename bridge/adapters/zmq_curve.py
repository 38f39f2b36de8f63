"""ZMQ CURVE on the ingest socket (DESIGN §8): server key, client allowlist, key files.

Part of the ZMQ adapter (with ``bridge.adapters.zmq``, the only modules that
import ``zmq`` for ingest). Design note:

* Keys are zmq.auth certificate files, the format of ``zmq.auth.create_certificates``
  (``busbridge keys generate``): ``<name>.key`` holds the public key,
  ``<name>.key_secret`` the public and secret keys (mode 0600).
* ``CurveServer`` makes the SUB socket a CURVE server with the secret key from
  ``zmq.curve.server_secret_key_file`` and runs pyzmq's ZAP handler
  (``zmq.auth.thread.ThreadAuthenticator``, in the socket's context) with a
  callback that accepts a client public key iff it is in
  ``allowed_client_keys`` or in a ``*.key`` file of ``allowed_clients_dir``.
  The directory is re-read when its modification time changes, so adding a
  client's key needs no restart. Invariant: the ZAP handler starts before the
  socket binds and stops after it is closed (libzmq lets every CURVE client in
  while no handler is bound). An unlisted client fails its handshake with
  ``HANDSHAKE_FAILED_AUTH``; a plain (no CURVE) client with
  ``HANDSHAKE_FAILED_PROTOCOL`` (mechanism mismatch). Neither ever delivers a frame.
* ``HandshakeWatch`` decides (clock injected, no I/O) when to warn that CURVE
  is on but no publisher completed a handshake: at the end of each period of
  ``handshake_warn_secs`` without a successful handshake, when none ever
  succeeded or some failed in that period (an idle, long-connected publisher
  alone does not warn).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from bridge.config.model import ZmqCurveConfig
from bridge.errors import BridgeError, ConfigError

__all__ = ["CurveServer", "HandshakeWatch", "generate_keypair"]

log = logging.getLogger(__name__)


class CurveServer:
    """CURVE server keys plus the ZAP allowlist for one context. ``start()`` before binding,
    ``apply(sock)`` on the socket, ``stop()`` after closing it.

    Raises ``ConfigError`` naming the key when a key file or the directory is unusable.
    """

    def __init__(self, ctx: zmq.Context, cfg: ZmqCurveConfig) -> None:
        self._ctx = ctx
        self.cfg = cfg
        self.public_key, self._secret_key = _server_keys(cfg.server_secret_key_file or "")
        self._listed = {key.encode() for key in cfg.allowed_client_keys}
        self._dir_keys: set[bytes] = set()
        self._dir_mtime: int | None = None
        self.allowed = self._refresh()
        self.denied = 0
        self._auth: ThreadAuthenticator | None = None

    def start(self) -> None:
        """Bind the ZAP handler in the socket's context (its own thread)."""
        auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("zmq.auth"))
        auth.start()
        auth.configure_curve_callback("*", credentials_provider=self)
        self._auth = auth
        log.info(
            "ZMQ CURVE on: %d client keys allowed, server public key %s",
            len(self.allowed),
            self.public_key.decode(),
        )

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` a CURVE server (before bind)."""
        sock.curve_secretkey = self._secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP decision for a client's Z85 public ``key`` (called in the authenticator thread)."""
        ok = key in self._refresh()
        if not ok:
            self.denied += 1
            log.debug(
                "ZMQ CURVE: refused client key %s (not in the allowlist)",
                key.decode(errors="replace"),
            )
        return ok

    def _refresh(self) -> set[bytes]:
        directory = self.cfg.allowed_clients_dir
        if directory:
            try:
                mtime = os.stat(directory).st_mtime_ns
                if mtime != self._dir_mtime:
                    self._dir_keys, self._dir_mtime = (
                        set(zmq.auth.load_certificates(directory)),
                        mtime,
                    )
            except (OSError, ValueError) as exc:
                if self._dir_mtime is None:  # at start: refuse; later: keep the last good list
                    raise ConfigError(
                        "zmq", [f"zmq.curve.allowed_clients_dir: cannot read {directory}: {exc}"]
                    ) from exc
        self.allowed = self._listed | self._dir_keys
        return self.allowed

    def stop(self) -> None:
        """Stop the ZAP handler and close its sockets. Idempotent."""
        auth, self._auth = self._auth, None
        if auth is not None:
            auth.stop()


def _server_keys(path: str) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            "zmq", [f"zmq.curve.server_secret_key_file: cannot load {path}: {exc}"]
        ) from exc
    if not secret:
        raise ConfigError(
            "zmq",
            [
                f"zmq.curve.server_secret_key_file: {path} has no secret-key (the .key_secret file is needed)"
            ],
        )
    return public, secret


class HandshakeWatch:
    """When to warn about CURVE handshakes; see the module note. ``observe(event)`` takes the
    monitor event names; ``due()`` returns a warning text once per quiet period, else None."""

    def __init__(self, period_secs: float, clock: Callable[[], float]) -> None:
        self.period_secs = period_secs
        self._clock = clock
        self._period_start = clock()
        self.succeeded = 0
        self._ok_in_period = False
        self._failed_in_period = 0

    def observe(self, event: str) -> None:
        if event == "handshake_succeeded":
            self.succeeded += 1
            self._ok_in_period = True
        elif event.startswith("handshake_failed"):
            self._failed_in_period += 1

    def due(self) -> str | None:
        if self._clock() - self._period_start < self.period_secs:
            return None
        quiet = not self._ok_in_period and (self.succeeded == 0 or self._failed_in_period > 0)
        failed = self._failed_in_period
        self._period_start, self._ok_in_period, self._failed_in_period = self._clock(), False, 0
        if not quiet:
            return None
        return (
            f"ZMQ CURVE is on and no publisher completed a handshake in the last {self.period_secs:g} s "
            f"({failed} handshakes failed): check that publishers use CURVE with this server's public key "
            "and that their public keys are in zmq.curve.allowed_clients_dir / allowed_client_keys"
        )


def generate_keypair(
    directory: str | os.PathLike[str], name: str, *, force: bool = False
) -> tuple[Path, Path, str]:
    """Write ``<directory>/<name>.key`` (public) and ``<name>.key_secret`` (mode 0600) in the
    zmq.auth certificate format; return both paths and the Z85 public key.

    Raises ``BridgeError`` when a file exists and not ``force``, or the directory cannot be written.
    """
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing and not force:
        raise BridgeError(f"refusing to overwrite {', '.join(existing)} (use --force)")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
        try:
            zmq.auth.create_certificates(folder, name)
        finally:
            os.umask(old_umask)
        secret.chmod(0o600)
        public.chmod(0o644)
    except OSError as exc:
        raise BridgeError(f"cannot write keys in {folder}: {exc.strerror or exc}") from exc
    return public, secret, zmq.auth.load_certificate(public)[0].decode()
