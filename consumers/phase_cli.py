"""``busbridge phase show`` / ``busbridge phase set PHASE [--fleet] [--force]``.

``show`` prints the local bridge's phase (admin ``/phase``, when the admin
port is known) and the fleet's keys from the phase KV bucket: the ``fleet``
and ``machine.<m>`` requests and each bridge's ``status.<m>`` answer.
``--json`` prints the same as one JSON object.

``set`` writes a ``PhaseRequest`` (phase, force, by ``user@host``) to
``machine.<this machine>``, or to ``fleet`` with ``--fleet``, then waits up to
``--wait`` seconds for the bridges' answers and prints them: applied, forced,
unchanged, or refused with the failing guards and by how much. A machine
whose bridge takes its phase from its config file (``phase.source: file``)
cannot be set here: edit ``phase.current`` in its file (it is hot reloaded).

Exit status: 0 every bridge that answered moved (or already was there);
1 a bridge refused, none answered, or NATS is unreachable; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

import anyio
import msgspec
import nats

from bridge.adapters.nats_connect import NatsUnreachable, connect_tool
from bridge.config.model import BridgeConfig, PhaseSource
from bridge.errors import ConfigError
from bridge.fleet_phase import (
    FLEET_KEY,
    PhaseRequest,
    PhaseStatus,
    decode_request,
    machine_key,
    now_utc,
    open_bucket,
    put_json,
)
from bridge.phase import Phase
from bridge.phase_runtime import who
from consumers.status import parity_paused

__all__ = ["add_arguments", "run_phase"]


def add_arguments(
    p: argparse.ArgumentParser, config_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    """``config_args`` adds the shared ``-c/--config`` and ``--nats-url`` options to a parser."""
    sub = p.add_subparsers(dest="phase_command", required=True)
    show = sub.add_parser("show", help="the phase of this bridge and of the fleet")
    show.add_argument("--json", action="store_true", help="one JSON object")
    st = sub.add_parser(
        "set", help="request a phase for this machine (or --fleet) through the KV bucket"
    )
    st.add_argument("phase", choices=[p.value for p in Phase])
    st.add_argument("--fleet", action="store_true", help="every bridge that follows the KV bucket")
    st.add_argument(
        "--force", action="store_true", help="override failing guards (recorded in PhaseChanged)"
    )
    st.add_argument(
        "--wait",
        type=float,
        default=15.0,
        metavar="SECS",
        help="wait this long for answers (default 15)",
    )
    for q in (show, st):
        config_args(q)


async def run_phase(cfg: BridgeConfig, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``show`` or ``set``, printing to ``out`` (default stdout); return the exit status (see the module note)."""
    out = out or sys.stdout
    if args.phase_command == "set" and not args.fleet and cfg.phase.source is PhaseSource.FILE:
        raise ConfigError(
            "phase",
            [
                f"phase.source is file for machine {cfg.machine}: set phase.current in its config file "
                "(hot reloaded; SIGHUP reloads at once), or use --fleet for bridges that follow the KV bucket"
            ],
        )
    try:
        nc = await connect_tool(cfg, name="busbridge-phase", keep_reconnecting=False)
    except NatsUnreachable as exc:
        if args.phase_command == "show":
            return _show(out, args, _local(cfg), None, f"NATS unreachable: {exc}")
        raise
    try:
        kv = await open_bucket(nc.jetstream(), cfg.phase.kv_bucket, cfg.stream.replicas)
        if args.phase_command == "show":
            return _show(out, args, _local(cfg), await _fleet(kv), "")
        return await _set(out, cfg, args, kv)
    finally:
        await nc.close()


def _local(cfg: BridgeConfig) -> dict[str, Any] | None:
    """The local bridge's ``/phase`` (None when the admin port is unknown or it does not answer)."""
    if not cfg.admin.enabled or not cfg.admin.port:
        return None
    host = "127.0.0.1" if cfg.admin.host in ("0.0.0.0", "") else cfg.admin.host
    try:
        with urllib.request.urlopen(f"http://{host}:{cfg.admin.port}/phase", timeout=2) as resp:
            return json.load(resp)
    except (OSError, ValueError, urllib.error.URLError):
        return None


async def _fleet(kv: Any) -> dict[str, Any]:
    """``{"requests": {key: request}, "status": {machine: status}}`` from the bucket."""
    requests: dict[str, Any] = {}
    status: dict[str, Any] = {}
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        keys = []
    for key in keys:
        entry = await kv.get(key)
        if key.startswith("status."):
            status[key.removeprefix("status.")] = {
                **json.loads(entry.value),
                "kv_revision": entry.revision,
            }
        elif (req := decode_request(entry.value)) is not None:
            requests[key] = {**msgspec.to_builtins(req), "kv_revision": entry.revision}
    return {"requests": requests, "status": status}


def _show(
    out: TextIO, args: argparse.Namespace, local: dict | None, fleet: dict | None, problem: str
) -> int:
    if args.json:
        out.write(
            json.dumps(
                {"local": local, "fleet": fleet, "problem": problem or None}, indent=2, default=str
            )
            + "\n"
        )
        return 0 if fleet is not None else 1
    if local is not None:
        last = local.get("last_request") or {}
        out.write(
            f"this bridge ({local.get('machine')}): phase {local['phase']} (source {local['source']})\n"
        )
        if last.get("result") == "refused":
            out.write(f"  last request {last['requested']} REFUSED: {last['reason']}\n")
        par = local.get("parity") or {}
        ratio = "-" if par.get("ratio") is None else f"{par['ratio']:.4f}"
        paused = " (paused while catching up)" if parity_paused(local) else ""
        out.write(
            f"  parity {ratio} over {par.get('window_secs', 0):g} s{paused}; backlog {local['guard_inputs']['backlog']}\n"
        )
    if fleet is None:
        out.write(f"fleet: {problem}\n")
        return 1
    for key, req in sorted(fleet["requests"].items()):
        out.write(
            f"request {key:<20} {req['phase']:<13} force={req['force']} by {req['by']} (rev {req['kv_revision']})\n"
        )
    for machine, st in sorted(fleet["status"].items()):
        extra = f": {st['reason']}" if st.get("result") == "refused" else ""
        out.write(
            f"bridge {machine:<21} {st['phase']:<13} last {st['key']}@{st['revision']} {st['result']}{extra}\n"
        )
    if not fleet["requests"] and not fleet["status"]:
        out.write("fleet: no phase requests yet\n")
    return 0


async def _set(out: TextIO, cfg: BridgeConfig, args: argparse.Namespace, kv: Any) -> int:
    key = FLEET_KEY if args.fleet else machine_key(cfg.machine or "")
    request = PhaseRequest(phase=Phase(args.phase), force=args.force, by=who(), at=now_utc())
    revision = await put_json(kv, key, request)
    out.write(
        f"requested {args.phase} on {key} (rev {revision}{', forced' if args.force else ''})\n"
    )
    answers, silent = await _answers(
        kv, revision, None if args.fleet else cfg.machine or "", args.wait
    )
    for machine in sorted(silent):
        out.write(
            f"{machine}: no answer within {args.wait:g} s (down, partitioned, or on phase.source: file)\n"
        )
    if not answers:
        out.write(f"no bridge answered within {args.wait:g} s\n")
        return 1
    refused = False
    for machine, st in sorted(answers.items()):
        refused |= st.result == "refused"
        why = f": {st.reason}" if st.result == "refused" else ""
        out.write(f"{machine}: {st.result} -> phase {st.phase.value}{why}\n")
    return 1 if refused or silent else 0


async def _answers(
    kv: Any, revision: int, machine: str | None, wait_secs: float
) -> tuple[dict[str, PhaseStatus], set[str]]:
    """``(answers, silent)``: statuses that answer ``revision`` (or a later request) and the
    machines that did not answer within ``wait_secs``: one machine, or (fleet) every
    machine that has ever written a status."""
    answers: dict[str, PhaseStatus] = {}
    known: dict[str, PhaseStatus] = {}
    with anyio.move_on_after(wait_secs):
        while True:
            known = await _statuses(kv)
            answers = {m: s for m, s in known.items() if s.revision >= revision}
            if machine is not None and machine in answers:
                return {machine: answers[machine]}, set()
            if machine is None and known and len(answers) == len(known):
                return answers, set()
            await anyio.sleep(0.2)
    if machine is not None:
        return {}, {machine}
    return answers, set(known) - set(answers)


async def _statuses(kv: Any) -> dict[str, PhaseStatus]:
    try:
        keys = [k for k in await kv.keys() if k.startswith("status.")]
    except nats.js.errors.NoKeysError:
        return {}
    out = {}
    for key in keys:
        entry = await kv.get(key)
        try:
            out[key.removeprefix("status.")] = msgspec.json.decode(entry.value, type=PhaseStatus)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out
