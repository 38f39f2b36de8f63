"""Run the nats-server configs shipped in ``ops/nats/`` on loopback, as they are.

The one place where a shipped file is adapted for a test. Only addresses and
paths change, everything else (server names, JetStream domains, cluster
name, limits, leaf permissions) is the operator's text:

* an address on a machine's LAN IP (``192.168.100.16:6222``: cluster routes,
  the hub's leafnode port) becomes ``127.0.0.1:<free port>``, the *same* free
  port in every file of the topology, so routes and leaf remotes find their
  peers;
* an address on ``0.0.0.0`` or ``127.0.0.1`` (client and monitoring ports,
  private to one server) becomes ``127.0.0.1:<free port>`` for that file;
* ``store_dir`` becomes ``<root>/<file stem>``.

Comments are left alone. A server keeps its ports across ``stop``/``start``
(a hub that comes back where its leaves look for it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bridge.adapters.nats_server import NatsServerProcess
from bridge.errors import EmbeddedServerError
from loadtest.harness import free_port

__all__ = ["OPS_NATS", "LoopbackTopology", "ShippedServer", "running_shipped"]

OPS_NATS = Path(__file__).resolve().parents[2] / "ops" / "nats"

_ADDRESS = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})\b")
_LOCAL_HOSTS = {"0.0.0.0", "127.0.0.1"}
_STORE_DIR = re.compile(r'^(\s*store_dir:\s*)"[^"]*"', re.M)


class LoopbackTopology:
    """Renders shipped config files onto loopback; one instance per topology (shared LAN map)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lan: dict[tuple[str, int], int] = {}

    def render(self, conf: Path) -> str:
        """The text of ``conf`` with addresses and ``store_dir`` rewritten (see module note)."""
        local: dict[int, int] = {}

        def address(m: re.Match[str]) -> str:
            host, port = m.group(1), int(m.group(2))
            key_map, key = (local, port) if host in _LOCAL_HOSTS else (self._lan, (host, port))
            if key not in key_map:
                key_map[key] = free_port()  # type: ignore[index]
            return f"127.0.0.1:{key_map[key]}"  # type: ignore[index]

        lines = []
        for line in conf.read_text(encoding="utf-8").splitlines(keepends=True):
            code, hash_, comment = line.partition("#")
            lines.append(_ADDRESS.sub(address, code) + hash_ + comment)
        store = (self.root / conf.stem).as_posix()
        text, count = _STORE_DIR.subn(lambda m: f'{m.group(1)}"{store}"', "".join(lines))
        assert count == 1, f"{conf}: expected one jetstream store_dir, found {count}"
        return text

    def server(self, conf: Path) -> ShippedServer:
        return ShippedServer(self.render(conf), self.root / conf.stem / "run", conf.stem)


class ShippedServer(NatsServerProcess):
    """A ``NatsServerProcess`` whose config file is a rendered shipped file (not generated)."""

    def __init__(self, text: str, run_dir: Path, name: str) -> None:
        super().__init__(run_dir, host="127.0.0.1", port=0, server_name=name)
        self._text = text

    def config_text(self) -> str:
        return self._text


_START_ATTEMPTS = 3


@contextmanager
def running_shipped(root: Path, *relative: str) -> Iterator[dict[str, ShippedServer]]:
    """Start ``ops/nats/<relative>`` files in order on loopback (keyed by file stem); every one
    is stopped, by its own PID, on exit.

    The ports are picked free before the servers start, so one may be taken meanwhile (a
    started server's outgoing route connections use ephemeral ports from the same range):
    when a server fails with "address already in use", every server is stopped and the
    topology rendered again on other ports, up to ``_START_ATTEMPTS`` times."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        topology = LoopbackTopology(root)
        servers = {Path(r).stem: topology.server(OPS_NATS / r) for r in relative}
        with ExitStack() as stack:
            try:
                for server in servers.values():
                    stack.callback(server.stop)
                    server.start()
            except EmbeddedServerError as exc:
                if "address already in use" not in str(exc) or attempt == _START_ATTEMPTS:
                    raise
                continue  # the ExitStack stops what started
            yield servers
            return
