"""Deployment files under ops/ agree with the code and with each other: systemd units, per-machine
configs and environment files, the shipped nats-server configs, the compose file."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bridge import cli
from bridge.adapters.nats_server import find_nats_server
from bridge.config.load import load_config
from bridge.config.model import PublishConfig
from bridge.errors import ConfigError
from tests.support.source_scan import ROOT, environment_variables_read
from tests.support.systemd_unit import read_unit

OPS = ROOT / "ops"
MACHINES = {"mainpc": "MainPC", "pc2": "PC2"}
BRIDGE_UNIT = OPS / "systemd" / "busbridge@.service"
NATS_UNIT = OPS / "systemd" / "nats-server@.service"
#: nats-server@<instance> -> the shipped file installed as /etc/nats/<instance>.conf
NATS_INSTANCES = {
    "single": "single.conf",
    "n1": "cluster/n1.conf",
    "n2": "cluster/n2.conf",
    "n3": "cluster/n3.conf",
    "hub": "leaf/hub.conf",
    "mainpc": "leaf/mainpc.conf",
    "pc2": "leaf/pc2.conf",
}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallArchitectures": "native",
}
_ENV_LINE = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")


def _parse_cli(argv: list[str]):
    """The CLI's own argparse parser; an unknown command or option fails (SystemExit)."""
    return cli._parser().parse_args(argv)


def _store_dir(conf: Path) -> str:
    return re.search(r'^\s*store_dir:\s*"([^"]+)"', conf.read_text(encoding="utf-8"), re.M).group(1)


def _listen(conf: Path) -> str:
    return re.search(r"^listen:\s*(\S+)", conf.read_text(encoding="utf-8"), re.M).group(1)


@pytest.mark.parametrize("machine", MACHINES)
def test_bridge_unit_runs_a_real_command_on_the_shipped_files(machine: str) -> None:
    unit = read_unit(BRIDGE_UNIT).instance(machine)
    argv = shlex.split(unit.one("Service", "ExecStart"))
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "busbridge"
    args = _parse_cli(argv[1:])
    assert args.func is cli._cmd_run
    assert args.config == f"/etc/busbridge/{machine}.yaml"
    cfg = load_config(OPS / "config" / f"{machine}.yaml")  # what gets installed there
    assert cfg.machine == MACHINES[machine]
    assert (
        f"/var/lib/{unit.one('Service', 'StateDirectory')}"
        == cfg.data_dir
        == unit.one("Service", "WorkingDirectory")
    )
    assert unit.one("Service", "EnvironmentFile") == f"/etc/busbridge/{machine}.env"
    assert (OPS / "env" / f"{machine}.env").is_file()
    assert f"nats-server@{machine}.service" in unit.one("Unit", "After").split()


def test_bridge_unit_stop_reload_and_restart_policy() -> None:
    service = read_unit(BRIDGE_UNIT)["Service"]
    assert service["ExecReload"] == [
        "/bin/kill -HUP $MAINPID"
    ]  # the CLI reloads its config on SIGHUP
    assert service["KillSignal"] == ["SIGTERM"]  # graceful drain
    assert float(service["TimeoutStopSec"][-1]) > PublishConfig().drain_timeout_secs
    assert service["Restart"][-1] in {"on-failure", "always"}
    assert service["RestartPreventExitStatus"] == [
        str(ConfigError.exit_status)
    ]  # a bad config: no loop


@pytest.mark.parametrize("path", [BRIDGE_UNIT, NATS_UNIT], ids=lambda p: p.name)
def test_units_are_hardened(path: Path) -> None:
    unit = read_unit(path)
    service = unit["Service"]
    missing = {k: v for k, v in HARDENING.items() if service.get(k, [None])[-1] != v}
    assert not missing, f"{path.name}: hardening missing or weaker: {missing}"
    assert service["User"] != ["root"] and "@system-service" in service["SystemCallFilter"]
    assert {"Unit", "Service", "Install"} <= set(unit.sections)


@pytest.mark.parametrize("instance", NATS_INSTANCES)
def test_nats_unit_instances_match_the_shipped_configs(instance: str) -> None:
    unit = read_unit(NATS_UNIT).instance(instance)
    argv = shlex.split(unit.one("Service", "ExecStart"))
    assert Path(argv[0]).name == "nats-server" and argv[1:] == ["-c", f"/etc/nats/{instance}.conf"]
    assert shlex.split(unit.one("Service", "ExecStartPre"))[1:] == [
        "-t",
        "-c",
        f"/etc/nats/{instance}.conf",
    ]
    assert unit.one("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    conf = OPS / "nats" / NATS_INSTANCES[instance]
    assert _store_dir(conf) == f"/var/lib/{unit.one('Service', 'StateDirectory')}"


@pytest.mark.parametrize("relative", sorted(set(NATS_INSTANCES.values())))
def test_shipped_nats_configs_pass_nats_server_t(relative: str) -> None:
    """The real binary's config check (``-t``, the units' ExecStartPre): unknown keys fail it."""
    result = subprocess.run(
        [find_nats_server(), "-t", "-c", str(OPS / "nats" / relative)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_every_shipped_nats_config_has_a_unit_instance() -> None:
    shipped = {p.relative_to(OPS / "nats").as_posix() for p in (OPS / "nats").rglob("*.conf")}
    assert shipped == set(NATS_INSTANCES.values())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_finds_no_unknown_keys(tmp_path: Path) -> None:
    for template, instance in ((BRIDGE_UNIT, "mainpc"), (NATS_UNIT, "hub")):
        shutil.copy(template, tmp_path / template.name)
        name = template.name.replace("@.", f"@{instance}.")
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", "--generators=no", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        problems = [line for line in result.stderr.splitlines() if "is not executable" not in line]
        assert not problems, "\n".join(problems)  # the binaries exist only on the target machines


@pytest.mark.parametrize("machine", MACHINES)
def test_machine_config_passes_check_config_and_targets_its_leaf(machine: str, capsys) -> None:
    path = OPS / "config" / f"{machine}.yaml"
    assert cli.main(["check-config", str(path)]) == 0
    assert f"machine {MACHINES[machine]}" in capsys.readouterr().out
    cfg = load_config(path)
    assert cfg.nats.servers == [f"nats://{_listen(OPS / 'nats' / 'leaf' / f'{machine}.conf')}"]
    assert cfg.zmq.bind_endpoint == "tcp://*:7150"


@pytest.mark.parametrize("machine", MACHINES)
def test_env_file_documents_every_variable_the_code_reads(machine: str) -> None:
    path = OPS / "env" / f"{machine}.env"
    lines = path.read_text(encoding="utf-8").splitlines()
    documented: dict[str, str] = {}
    for i, line in enumerate(lines):
        if not line.strip() or (line.startswith("#") and not _ENV_LINE.match(line)):
            continue
        match = _ENV_LINE.match(line)
        assert match, (
            f"{path.name}:{i + 1}: not KEY=value (systemd EnvironmentFile / compose env_file): {line!r}"
        )
        assert lines[i - 1].startswith("#"), (
            f"{path.name}:{i + 1}: {match.group(1)} has no comment above it"
        )
        documented[match.group(1)] = line
    read = environment_variables_read("bridge", "consumers")
    cfg = load_config(OPS / "config" / f"{machine}.yaml")
    named = [v for v in (cfg.nats.password_env, cfg.nats.token_env, cfg.nats.nkey_seed_env) if v]
    missing = sorted({*read, *named} - set(documented))
    assert not missing, (
        f"{path.name} lacks {missing} (read at {[read.get(m, 'config') for m in missing]})"
    )
    active_secrets = [
        k
        for k, line in documented.items()
        if not line.startswith("#") and re.search("PASSWORD|TOKEN|SEED", k)
    ]
    assert not active_secrets, f"{path.name} ships secret values: {active_secrets}"
    assert documented["BUSBRIDGE_CONFIG"] == f"BUSBRIDGE_CONFIG=/etc/busbridge/{machine}.yaml"


def _expand(text: str, env: dict[str, str]) -> str:
    """Compose interpolation: ``${VAR:-default}`` and ``${VAR}``."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1), m.group(2) or ""), text
    )


@pytest.mark.parametrize("machine", MACHINES)
def test_compose_file_references_files_that_exist(machine: str) -> None:
    compose_dir = OPS / "compose"
    text = _expand(
        (compose_dir / "docker-compose.yml").read_text(encoding="utf-8"),
        {"BUSBRIDGE_INSTANCE": machine},
    )
    services = yaml.safe_load(text)["services"]
    bridge = services["busbridge"]
    context = (compose_dir / bridge["build"]["context"]).resolve()
    dockerfile = context / bridge["build"]["dockerfile"]
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (context / source).exists(), f"Dockerfile COPY {source}: missing"
    for env_file in bridge["env_file"]:
        assert (compose_dir / env_file).is_file()
    mounts = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            host, target = volume.split(":")[:2]
            if host.startswith("."):
                assert (compose_dir / host).is_file(), f"volume source {host}: missing"
            mounts[target] = host
    args = _parse_cli(bridge["command"])
    assert (
        args.func is cli._cmd_run
        and (compose_dir / mounts[args.config]).resolve() == OPS / "config" / f"{machine}.yaml"
    )
    cfg = load_config(OPS / "config" / f"{machine}.yaml")
    assert mounts[cfg.data_dir] == "busbridge-data"
    nats_conf = Path(mounts["/etc/nats/single.conf"])
    assert mounts[_store_dir((compose_dir / nats_conf).resolve())] == "nats-data"
    published = {p.split(":")[-1] for p in bridge["ports"]}
    assert {cfg.zmq.bind_endpoint.rsplit(":", 1)[1], str(cfg.admin.port)} <= published
    assert cfg.admin.host == "0.0.0.0"  # published ports reach it
