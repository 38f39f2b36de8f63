"""Subject scheme and header names of busbridge (DESIGN §5).

Every bridged subject lives under one prefix (default ``errbus``), chosen so it
never overlaps the legacy ``errors.>`` streams (``ERRORS``, ``ERROR_STREAM``,
``AGENT_ERRORS``, legacy-bus.md trap 12):

* ``<prefix>.error.<machine>.<severity>.<source>`` - ``ErrorEvent``
* ``<prefix>.dlq.<machine>`` - ``DeadLetter``
* ``<prefix>.flood.<machine>.<source>`` - flood control events
* ``<prefix>.health.<machine>.<service>`` - health reports
* ``<prefix>.bridge.<machine>.<event>`` - bridge heartbeats and phase changes

Native publishers (agents using the ``busclient`` package) do not publish into the stream
directly: they publish ``ErrorEvent`` contracts to an **intake** subject outside the stream's
filter, ``<prefix>_intake.<machine>.<source>`` (stream ``<stream name>_INTAKE``, provisioned by
the sidecar), which the machine's sidecar consumes and runs through the same identity, dedup
and flood control as the ZMQ traffic before publishing to ``<prefix>.error...``.

Tokens are sanitised: anything outside ``[A-Za-z0-9_-]`` becomes ``_``, an
empty token becomes ``_``, and tokens are cut to ``MAX_TOKEN_CHARS``.
"""

from __future__ import annotations

import re

from contracts.messages import Severity

__all__ = [
    "DEFAULT_PREFIX",
    "HEADER_CLIENT_API",
    "HEADER_CONTRACT",
    "HEADER_CONTRACT_VERSION",
    "HEADER_MSG_ID",
    "HEADER_ORIGIN",
    "INTAKE_SUFFIX",
    "LEGACY_PREFIXES",
    "MAX_TOKEN_CHARS",
    "Subjects",
    "sanitise_token",
]

DEFAULT_PREFIX = "errbus"
LEGACY_PREFIXES = ("errors",)
MAX_TOKEN_CHARS = 64

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_CONTRACT = "Busbridge-Contract"
HEADER_CONTRACT_VERSION = "Busbridge-Contract-Version"
HEADER_ORIGIN = "Busbridge-Origin"
#: on intake messages: which publisher API produced the event (``native``, or the legacy API a
#: drop-in shim stands in for: ``errpub``, ``pc2_errpub``, ``library_a``, ``library_b``,
#: ``base_agent``), for the migration view
HEADER_CLIENT_API = "Busbridge-Client-Api"
INTAKE_SUFFIX = "_intake"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sanitise_token(value: str) -> str:
    """Return ``value`` as one safe subject token (never empty, never a wildcard)."""
    token = _UNSAFE.sub("_", value[:MAX_TOKEN_CHARS])
    return token or "_"


class Subjects:
    """Builds the subjects under one prefix. ``prefix`` may contain dots."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or prefix.split(".")[0] in LEGACY_PREFIXES:
            raise ValueError(f"subject prefix {prefix!r} collides with the legacy errors.> streams")
        self.prefix = prefix

    @property
    def all(self) -> str:
        """Wildcard covering every busbridge subject: the stream's subject filter."""
        return f"{self.prefix}.>"

    def error(self, machine: str, severity: Severity, source: str) -> str:
        return f"{self.prefix}.error.{sanitise_token(machine)}.{severity.value}.{sanitise_token(source)}"

    def errors(self, machine: str = "*", severity: str = "*", source: str = "*") -> str:
        """Filter subject for error events; ``*`` leaves a token open."""
        parts = [_filter_token(machine), _filter_token(severity), _filter_token(source)]
        return f"{self.prefix}.error." + ".".join(parts)

    def dead_letter(self, machine: str) -> str:
        return f"{self.prefix}.dlq.{sanitise_token(machine)}"

    def dead_letters(self, machine: str = "*") -> str:
        return f"{self.prefix}.dlq.{_filter_token(machine)}"

    def flood(self, machine: str, source: str) -> str:
        return f"{self.prefix}.flood.{sanitise_token(machine)}.{sanitise_token(source)}"

    def health(self, machine: str, service: str) -> str:
        return f"{self.prefix}.health.{sanitise_token(machine)}.{sanitise_token(service)}"

    def bridge(self, machine: str, event: str) -> str:
        return f"{self.prefix}.bridge.{sanitise_token(machine)}.{sanitise_token(event)}"

    @property
    def intake_prefix(self) -> str:
        """Root of the intake subjects (outside ``all``): ``<prefix>_intake``."""
        return f"{self.prefix}{INTAKE_SUFFIX}"

    def intake(self, machine: str, source: str) -> str:
        """Where a native publisher on ``machine`` sends its ``ErrorEvent``s."""
        return f"{self.intake_prefix}.{sanitise_token(machine)}.{sanitise_token(source)}"

    def intakes(self, machine: str = "*") -> str:
        """Filter subject for one machine's intake (``*``: every machine)."""
        return f"{self.intake_prefix}.{_filter_token(machine)}.>"


def _filter_token(value: str) -> str:
    return value if value in ("*", ">") else sanitise_token(value)
