"""A ``busbridge run`` child process on free loopback ports (benchmarks and tests); killed by its PID."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bridge.adapters.nats_server import terminate

__all__ = ["BUSBRIDGE", "BridgeProcess", "free_port"]

BUSBRIDGE = str(Path(sys.executable).with_name("busbridge"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BridgeProcess:
    """``busbridge run -c <yaml>`` with the top-level sections of ``extra`` (YAML) merged into the
    defaults below, key by key (``zmq: {decode_worker: false}`` keeps the ZMQ endpoint);
    ``start()`` waits for /healthz.

    Flood control is off unless ``flood``: steady load-test traffic is one big flood.
    Fleet health is off (heartbeats would count as stored messages); ``extra`` may turn it on.
    """

    def __init__(
        self,
        workdir: Path,
        nats_url: str | None,
        extra: str = "",
        zmq_port: int | None = None,
        log_level: str = "INFO",
        flood: bool = False,
    ) -> None:
        self.workdir = workdir
        self.zmq_port = zmq_port or free_port()
        self.admin_port = free_port()
        self.config = workdir / "bridge.yaml"
        nats = (
            {"servers": [nats_url], "reconnect_wait_secs": 0.2}
            if nats_url
            else {"embedded": {"port": 0}}
        )
        doc: dict[str, Any] = {
            "machine": "LoadPC",
            "data_dir": str(workdir / "data"),
            "log_level": log_level,
            "zmq": {"bind_endpoint": f"tcp://127.0.0.1:{self.zmq_port}"},
            "nats": nats,
            "admin": {"port": self.admin_port, "probe_interval_secs": 0.5},
            "flood": {"enabled": flood},
            "health": {"enabled": False},
            "republish": {"bind_endpoint": "tcp://127.0.0.1:*"},
        }
        for key, value in (yaml.safe_load(extra) or {}).items():  # merged into the one above
            base = doc.get(key)
            doc[key] = (
                {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
            )
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.log = workdir / "bridge.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.zmq_port}"

    @property
    def spool_path(self) -> Path:
        return self.workdir / "data" / "spool.db"

    def start(self, timeout_secs: float = 30.0) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen([BUSBRIDGE, "run", "-c", str(self.config)], stderr=err)
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=1)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise RuntimeError("bridge did not start")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_secs: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        terminate(self.proc, timeout_secs)
        return self.proc.returncode
